"""The DCGAN-style nets (models/dcgan.py): shapes, the DCGAN guidelines, MAC counts."""
import pytest
import torch
from torch import nn

from models.dcgan import (MAX_LAYERS, ConvAutoEncoderDiscriminator, ConvDiscriminator,
                          ConvGenerator)
from models.archs import get_arch
from sweep.plan.config import TrialConfig
from sweep.plan.grid import network_macs
from sweep.train.point import build_models


def layers(module, kind):
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_shapes_per_layer_count(n):
    side = 32 >> (n - 1)  # 16, 8, 4, 2, 1
    g, d = ConvGenerator(n, 64, 100), ConvDiscriminator(n, 64, 0.0)
    ae = ConvAutoEncoderDiscriminator(n, 64, 0.0, "l2")
    x = g(torch.rand(5, 100) * 2 - 1)
    assert x.shape == (5, 1024) and x.abs().max() <= 1  # tanh output, flattened like the mlp nets
    assert g.project.out_features == 64 * side * side
    ups = layers(g, nn.ConvTranspose2d)
    assert [(c.in_channels, c.out_channels) for c in ups] == [
        (max(64 >> i, 1), max(64 >> (i + 1), 1) if i < n - 2 else 1) for i in range(n - 1)]
    assert d(x).score.shape == (5,) and d(x).code is None
    convs = layers(d, nn.Conv2d)
    assert len(convs) == n - 1 and convs[0].in_channels == 1 and convs[-1].out_channels == 64
    assert d.out.in_features == 64 * side * side
    out = ae(x)
    assert out.score.shape == (5,) and out.code.shape == (5, 64 * side * side)


def test_dcgan_guidelines():
    g, d = ConvGenerator(4, 64, 100), ConvDiscriminator(4, 64, 0.0)
    ae = ConvAutoEncoderDiscriminator(4, 64, 0.0, "l1")
    # strided convolutions, no pooling: every conv 4x4, stride 2, padding 1
    for m in layers(g, nn.ConvTranspose2d) + layers(d, nn.Conv2d) + layers(ae, (nn.Conv2d, nn.ConvTranspose2d)):
        assert (m.kernel_size, m.stride, m.padding) == ((4, 4), (2, 2), (1, 1))
    assert not layers(g, (nn.MaxPool2d, nn.AvgPool2d)) and not layers(d, (nn.MaxPool2d, nn.AvgPool2d))
    # batch norm everywhere except G's output and D's input layer: G has one BN per layer
    # but the last; D one per conv but the first
    assert len(layers(g, nn.BatchNorm2d)) == 3 and len(layers(d, nn.BatchNorm2d)) == 2
    assert str(d.body[0]).startswith("Conv2d(1,") and isinstance(d.body[1], nn.LeakyReLU)
    # ReLU in G, LeakyReLU(0.2) in D's encoder
    assert len(layers(g, nn.ReLU)) == 3 and not layers(g, nn.LeakyReLU)
    assert [m.negative_slope for m in layers(d, nn.LeakyReLU)] == [0.2] * 3
    # weights N(0, 0.02), biases 0
    w = torch.cat([m.weight.flatten() for m in layers(g, (nn.ConvTranspose2d, nn.Linear))])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert all((m.bias == 0).all() for m in layers(d, nn.Conv2d))
    # the auto-encoder's decoder mirrors its encoder and ends in raw pixels
    enc = [(c.in_channels, c.out_channels) for c in layers(ae.encoder, nn.Conv2d)]
    dec = [(c.in_channels, c.out_channels) for c in layers(ae.decoder, nn.ConvTranspose2d)]
    assert dec == [(b, a) for a, b in reversed(enc)]
    assert isinstance(ae.decoder[-1], nn.ConvTranspose2d)


def test_dcgan_energy_is_the_shared_norm():
    ae = ConvAutoEncoderDiscriminator(3, 8, 0.0, "l1").eval()
    x = torch.rand(4, 1024) * 2 - 1
    recon = ae.decoder(ae.encoder(x.view(-1, 1, 32, 32))).flatten(1)
    assert torch.allclose(ae(x).score, (recon - x).abs().mean(1))
    ae.energy_norm = "l2"
    assert torch.allclose(ae(x).score, (recon - x).pow(2).sum(1).sqrt())


def test_layer_limits():
    assert get_arch("dcgan").max_layers == MAX_LAYERS == 6  # 32 halves five times, plus one layer
    with pytest.raises(ValueError, match="at most 6 layers"):
        TrialConfig(arch="dcgan", nLayerG=7)
    TrialConfig(arch="mlp", nLayerG=7)  # fully-connected nets have no such limit
    with pytest.raises(ValueError):
        ConvDiscriminator(7, 8, 0.0)


def count_macs(module, x) -> int:
    """MACs of one forward pass, counted by hooks on the layers that run."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
        elif isinstance(m, nn.Conv2d):
            total += m.in_channels * m.out_channels * 16 * out.shape[-1] * out.shape[-2]
        elif isinstance(m, nn.ConvTranspose2d):
            total += m.in_channels * m.out_channels * 16 * inp[0].shape[-1] * inp[0].shape[-2]

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    module.eval()(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("family", ["gan", "ebgan"])
@pytest.mark.parametrize("arch,n,size", [("mlp", 3, 400), ("dcgan", 2, 64), ("dcgan", 4, 64),
                                         ("dcgan", 6, 32), ("dcgan", 5, 7)])
def test_flop_estimate_counts_the_layers_that_run(family, arch, n, size):
    cfg = TrialConfig(family=family, arch=arch, nLayerG=n, nLayerD=n, sizeG=size, sizeD=size)
    _, g, d = build_models(cfg, torch.device("cpu"))
    assert network_macs(cfg) == (count_macs(g, torch.rand(1, 100)), count_macs(d, torch.rand(1, 1024)))
