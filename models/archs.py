"""Architectures, from one registry: which networks a config's `arch` builds, and what they cost.

    from models.archs import Arch, register_arch
    register_arch(Arch("mynet", "MyNet", MyG, MyLogitD, MyAutoEncoderD, my_macs))

Every net takes and returns flattened (N, 1024) images and a discriminator returns a
`DOut` (models/networks.py), so the losses, the training loop and the scorer never see an
arch. `macs(cfg, discriminator)` counts the multiply-accumulates of one forward pass of G
and of D per sample (D of the given kind, "logit" or "autoencoder"); the plan's FLOPs and
time estimates come from it (sweep/plan/grid.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from models.dcgan import (MAX_LAYERS, ConvAutoEncoderDiscriminator, ConvDiscriminator, ConvGenerator,
                          channel_widths, smallest_side)
from models.networks import IMAGE_DIM, AutoEncoderDiscriminator, Generator, MLPDiscriminator
from models.registry import Registry


@dataclass(frozen=True)
class Arch:
    name: str  # the config's `arch` value
    label: str  # how the report names it ("DCGAN"); the paper's mlp is never labelled
    generator: type  # (nLayerG, sizeG, z_dim)
    logit_d: type  # (nLayerD, sizeD, dropout) -> DOut(logit, None)
    autoencoder_d: type  # (nLayerD, sizeD, dropout, energy_norm, dropout_code=) -> DOut(energy, code)
    macs: Callable[..., tuple[int, int]]  # (cfg, discriminator kind) -> (MACs of G, MACs of D) per sample
    max_layers: int | None = None  # most weight layers G or D may have (None: no limit)
    size_unit: str = ""  # what sizeG / sizeD count, when not units ("ch" for channels)
    # (nLayerG, sizeG, z_dim, nLayerD, sizeD, discriminator kind) -> ((G params, G buffers), (D params,
    # D buffers)), or None: sweep/plan/disk.py builds the nets on the meta device and counts instead
    param_counts: Callable[..., tuple[tuple[int, int], tuple[int, int]]] | None = None
    # what d_batch's "auto" means on this arch for a D of a kind, where it differs from the family's
    # choice (models/losses.py Family.d_batch): a DCGAN GAN trains better with separate batches
    # (docs/reproduction.md, the seeded DCGAN study), as the DCGAN code does
    d_batch: tuple[tuple[str, str], ...] = ()  # ((discriminator kind, "joint" | "separate"), ...)

    def nets(self, cfg, discriminator: str, make: Callable | None = None):
        """(G, D) of a config (a TrialConfig's fields), D the kind the family needs ("logit" or an
        auto-encoder's energy). make(cls, *args, **kwargs) builds each (default: cls itself)."""
        make = make or (lambda cls, *a, **kw: cls(*a, **kw))
        g = make(self.generator, cfg.nLayerG, cfg.sizeG, cfg.z_dim)
        dropout = cfg.dropout_rate if cfg.dropoutD else 0.0
        if discriminator == "logit":
            return g, make(self.logit_d, cfg.nLayerD, cfg.sizeD, dropout)
        return g, make(self.autoencoder_d, cfg.nLayerD, cfg.sizeD, dropout, cfg.energy_norm,
                       dropout_code=cfg.dropout_code)


def mlp_macs(cfg, discriminator: str) -> tuple[int, int]:
    """A dense layer costs its weight count. A logit D ends in one unit; an auto-encoder's
    decoder is one layer back to the image (models/networks.py)."""
    pg = cfg.z_dim * cfg.sizeG + (cfg.nLayerG - 2) * cfg.sizeG ** 2 + cfg.sizeG * IMAGE_DIM
    pd_hidden = IMAGE_DIM * cfg.sizeD + (cfg.nLayerD - 2) * cfg.sizeD ** 2
    return pg, pd_hidden + (cfg.sizeD if discriminator == "logit" else cfg.sizeD * IMAGE_DIM)


def mlp_param_counts(n_g: int, size_g: int, z_dim: int, n_d: int, size_d: int,
                     discriminator: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Exact counts of models/networks.py's nets (tests/test_packs.py checks them against the nets):
    a Linear(a, b) holds a*b + b parameters, a BatchNorm1d(b) 2b and 2b + 1 buffers. G: n_g - 1
    hidden layers, each with batch norm, then the image layer; D: n_d - 1 hidden layers, batch norm
    after all but the first, then one logit or the decoder back to the image."""
    hidden_g = z_dim * size_g + size_g + (n_g - 2) * (size_g * size_g + size_g)
    g = hidden_g + 2 * size_g * (n_g - 1) + size_g * IMAGE_DIM + IMAGE_DIM
    hidden_d = IMAGE_DIM * size_d + size_d + (n_d - 2) * (size_d * size_d + size_d)
    head = size_d + 1 if discriminator == "logit" else size_d * IMAGE_DIM + IMAGE_DIM
    d = hidden_d + 2 * size_d * (n_d - 2) + head
    return (g, (n_g - 1) * (2 * size_g + 1)), (d, (n_d - 2) * (2 * size_d + 1))


def dcgan_macs(cfg, discriminator: str) -> tuple[int, int]:
    """A 4x4 (transposed) convolution costs cin * cout * 16 per pixel of its smaller side:
    G doubles the side from s up to 32 (per input pixel), D halves it from 32 down to s
    (per output pixel); a logit D ends in one linear layer, an auto-encoder's decoder
    mirrors its encoder (models/dcgan.py)."""
    sg = smallest_side(cfg.nLayerG)
    wg = channel_widths(cfg.sizeG, cfg.nLayerG - 1) + [1]
    pg = cfg.z_dim * wg[0] * sg * sg + sum(a * b * 16 * (sg << i) ** 2
                                           for i, (a, b) in enumerate(zip(wg[:-1], wg[1:])))
    wd = [1] + channel_widths(cfg.sizeD, cfg.nLayerD - 1)[::-1]
    enc = sum(a * b * 16 * (32 >> (i + 1)) ** 2 for i, (a, b) in enumerate(zip(wd[:-1], wd[1:])))
    sd = smallest_side(cfg.nLayerD)
    return pg, enc + (wd[-1] * sd * sd if discriminator == "logit" else enc)


ARCHS = Registry("arch")


def register_arch(arch: Arch, replace: bool = False) -> Arch:
    """Add an architecture: from then on it is an `arch` choice of every family."""
    return ARCHS.register(arch, replace)


register_arch(Arch("mlp", "MLP", Generator, MLPDiscriminator, AutoEncoderDiscriminator, mlp_macs,
                   param_counts=mlp_param_counts))
register_arch(Arch("dcgan", "DCGAN", ConvGenerator, ConvDiscriminator, ConvAutoEncoderDiscriminator, dcgan_macs,
                   max_layers=MAX_LAYERS, size_unit="ch", d_batch=(("logit", "separate"),)))


def get_arch(name: str) -> Arch:
    return ARCHS.get_or_raise(name)
