"""DCGAN-style convolutional networks for 32x32x1 MNIST (grid axis `arch: dcgan`).

    gansweep trial --family ebgan --arch dcgan --n-layer-g 4 --n-layer-d 4 --size-g 64 --size-d 64 --epochs 1

The DCGAN guidelines (Radford et al. 2016, section 3), applied as written:
  * no pooling: strided convolutions in D, fractionally-strided (transposed)
    convolutions in G, every one 4x4 with stride 2 and padding 1, so each layer
    halves (D) or doubles (G) the side of the image;
  * batch norm in G and D, except G's output layer and D's input layer;
  * ReLU in G (tanh at its output), LeakyReLU(0.2) in D;
  * no fully-connected hidden layers: only G's first layer (project and
    reshape the noise) and a GAN D's last (flatten to one logit) are linear;
  * weights from N(0, 0.02), biases 0.

The Table 1 axes keep their meaning as closely as convolutions allow:
  nLayerG  weight layers of G: one projection to (sizeG, s, s) with
           s = 32 / 2^(nLayerG - 1), then nLayerG - 1 transposed convolutions
           up to 32x32; channels halve at each, the last has 1 (so 2..6).
  nLayerD  weight layers of a GAN D: nLayerD - 1 strided convolutions from 32x32
           down to s = 32 / 2^(nLayerD - 1), channels doubling up to sizeD, and
           one linear layer to the logit (so 2..6).
           An auto-encoder D (EBGAN, EBGAN-PT, BEGAN) has the same nLayerD - 1
           convolutions as its encoder and a mirrored decoder of nLayerD - 1
           transposed convolutions back to 32x32 (a single decoder layer, as in
           the fully-connected nets, cannot upsample a convolutional code).
  sizeG    channels of G's widest (first) feature map.
  sizeD    channels of D's widest (last encoder) feature map.
  dropoutD dropout after D's hidden activations (encoder and decoder).

Every network takes and returns flattened images (N, 1024), like the
fully-connected ones, so losses, scoring and the trial loop never see an arch.
"""
from __future__ import annotations

import torch
from torch import nn

from models.networks import ENERGY_NORMS, DOut, reconstruction_energy, without_code_dropout

SIDE = 32
MAX_LAYERS = 6  # 32 halves five times down to 1x1: five stride-2 layers plus one


def smallest_side(n_layers: int) -> int:
    """Side of the smallest feature map of a net with n_layers weight layers."""
    if not 2 <= n_layers <= MAX_LAYERS:
        raise ValueError(f"dcgan nets have 2..{MAX_LAYERS} layers, got {n_layers}")
    return SIDE >> (n_layers - 1)


def channel_widths(size: int, n: int) -> list[int]:
    """n channel counts, widest first, halving (never below 1): 64, 4 -> [64, 32, 16, 8]."""
    return [max(size >> i, 1) for i in range(n)]


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and not m.weight.is_meta:  # see networks._init
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 4, stride=2, padding=1)


def _decoder(widths: list[int], dropout: float) -> nn.Sequential:
    """Transposed convolutions widths[0] -> widths[1] -> ... -> 1 channel, doubling the side
    each; BN + ReLU after all but the last, which outputs raw pixel values."""
    chans = widths + [1]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        layers.append(_up(a, b))
        if i < len(chans) - 2:
            layers += [nn.BatchNorm2d(b), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ConvGenerator(nn.Module):
    def __init__(self, n_layers: int, size: int, z_dim: int):
        super().__init__()
        self.side = smallest_side(n_layers)
        widths = channel_widths(size, n_layers - 1)  # channels of the n_layers - 1 maps before the image
        self.width0 = widths[0]
        self.project = nn.Linear(z_dim, widths[0] * self.side * self.side)
        self.stem = nn.Sequential(nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.body = _decoder(widths, dropout=0.0)
        _init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, self.width0, self.side, self.side)  # (N, sizeG, s, s)
        h = self.stem(h)
        return torch.tanh(self.body(h)).flatten(1)  # (N, 1, 32, 32) -> (N, 1024)


def _encoder(widths: list[int], dropout: float) -> nn.Sequential:
    """Strided convolutions 1 -> widths[0] -> ... -> widths[-1], halving the side each;
    BN after all but the first (D's input layer), LeakyReLU(0.2) after every one."""
    chans = [1] + widths
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        layers.append(_down(a, b))
        if i > 0:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.LeakyReLU(0.2))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ConvDiscriminator(nn.Module):
    """GAN discriminator: strided convolutions, then one linear layer to a logit."""

    def __init__(self, n_layers: int, size: int, dropout: float):
        super().__init__()
        side = smallest_side(n_layers)
        widths = channel_widths(size, n_layers - 1)[::-1]  # narrowest first, sizeD last
        self.body = _encoder(widths, dropout)
        self.out = nn.Linear(widths[-1] * side * side, 1)
        _init(self)

    def forward(self, x: torch.Tensor) -> DOut:
        h = self.body(x.view(-1, 1, SIDE, SIDE)).flatten(1)  # (N, sizeD * s * s)
        return DOut(self.out(h).squeeze(1), None)  # (N,)


class ConvAutoEncoderDiscriminator(nn.Module):
    """EBGAN / BEGAN discriminator: energy = reconstruction error of a conv auto-encoder.

    The code for the pulling-away term is the encoder's output, flattened:
    exactly what the decoder reads.
    """

    def __init__(self, n_layers: int, size: int, dropout: float, energy_norm: str, dropout_code: bool = True):
        super().__init__()
        if energy_norm not in ENERGY_NORMS:
            raise ValueError(f"energy_norm must be one of {ENERGY_NORMS}, got {energy_norm!r}")
        smallest_side(n_layers)
        widths = channel_widths(size, n_layers - 1)[::-1]
        self.encoder = without_code_dropout(_encoder(widths, dropout), dropout_code)
        self.decoder = _decoder(widths[::-1], dropout)
        self.energy_norm = energy_norm
        _init(self)

    def forward(self, x: torch.Tensor) -> DOut:
        code = self.encoder(x.view(-1, 1, SIDE, SIDE))  # (N, sizeD, s, s)
        recon = self.decoder(code).flatten(1)  # (N, 1024)
        return DOut(reconstruction_energy(recon, x, self.energy_norm), code.flatten(1))

