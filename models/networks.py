"""Fully-connected networks of the EBGAN paper's MNIST grid search (section 4.1).

(`arch: mlp`; the DCGAN-style conv nets of `arch: dcgan` are in models/dcgan.py.)

Images are flattened 32x32 MNIST digits (1024 values in [-1, 1]). The layer
counts follow Table 1 of the paper:

    G:         nLayerG linear layers  z -> sizeG -> ... -> sizeG -> 1024, tanh
    GAN D:     nLayerD linear layers  1024 -> sizeD -> ... -> sizeD -> 1 (a logit)
    EBGAN D:   an auto-encoder; nLayerD counts encoder and decoder layers together,
               the decoder is always one layer: (nLayerD - 1) encoder layers
               1024 -> sizeD -> ... -> sizeD, then one decoder layer sizeD -> 1024.

Paper appendix: batch norm after each weight layer except G's output layer and
D's input layer (and, here, D's output layer, which is a logit or a
reconstruction); ReLU; weights of D from N(0, 0.002) and of G from N(0, 0.02),
biases 0. dropoutD adds dropout after D's hidden activations.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import nn

IMAGE_DIM = 32 * 32  # padded MNIST, flattened
ENERGY_NORMS = ("l2", "l2_squared", "mse", "l1")
D_BATCHES = ("joint", "separate")  # how D's batch norm sees a step's real and generated images


class DOut(NamedTuple):
    """What a discriminator returns; every loss is a function of these."""

    score: torch.Tensor  # (N,) logit (GAN) or energy (EBGAN)
    code: torch.Tensor | None  # (N, sizeD) encoder output (auto-encoder D only)


def _init(module: nn.Module, std: float) -> None:
    for m in module.modules():
        # Networks built on the meta device (disk estimates) hold no values to fill, and torch's meta
        # normal_ first imports its Python decompositions: 1.2 s of every `run` and `resume`.
        if isinstance(m, nn.Linear) and not m.weight.is_meta:
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)


class Redrawable(nn.Module):
    """A paper net that a worker may reuse for the next point of its shape (sweep/train/point.py
    NetPool): `redraw()` gives it what `__init__` would give a new one, bit for bit.

    Building a small net is mostly Python (a Module per layer: 2.7 ms a point of the scale
    bench, more than its training step); redrawing is the same random draws in the same order
    from torch's global RNG, into fresh tensors, so whoever still holds the old ones (a
    state_dict kept for the final checkpoint, a stacked copy) never sees them change."""

    init_std: float

    def redraw(self) -> None:
        device = next(self.parameters()).device
        if "_layers" not in self.__dict__:
            # modules() walks the layers in the order the subclasses' __init__ builds them (hidden
            # stack, then the last layer), so the draws below come in the same order
            # (self left out: a list holding the net itself would free it only by the cycle collector)
            self._layers = [m for m in self.modules() if m._parameters or m._buffers]
            self._all = [m for m in self.modules() if m is not self]
        linears = []
        for m in self._layers:
            if isinstance(m, nn.Linear):
                # nn.Linear.__init__'s draws: kaiming_uniform_(a=sqrt(5)) and the bias, both
                # U(-1/sqrt(fan_in), 1/sqrt(fan_in)). _init's normal_ and zeros_ overwrite their
                # values; what must match is the number of draws from the stream and their order.
                w, b = torch.empty(m.out_features, m.in_features), torch.empty(m.out_features)
                bound = 1 / math.sqrt(m.in_features)
                w.uniform_(-bound, bound)
                b.uniform_(-bound, bound)
                linears.append((m, w, b))
            elif isinstance(m, nn.BatchNorm1d):  # nn.BatchNorm1d.__init__: no draws
                n = m.num_features
                m._parameters["weight"], m._parameters["bias"] = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))
                m._buffers["running_mean"], m._buffers["running_var"] = torch.zeros(n), torch.ones(n)
                m._buffers["num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
                m.track_running_stats = True
            else:
                raise TypeError(f"{type(self).__name__}.redraw does not know a {type(m).__name__} layer")
        for m, w, b in linears:  # _init: after every layer is built, in the same order
            m._parameters["weight"], m._parameters["bias"] = nn.Parameter(w.normal_(0.0, self.init_std)), \
                nn.Parameter(b.zero_())
        for m in self._all:
            m.training = True
        self.training = True
        if device.type != "cpu":  # built on the CPU and moved, as sweep/train/point.py build_models does
            self.to(device)


def _hidden_stack(sizes: list[int], *, bn_first: bool, dropout: float) -> list[nn.Module]:
    """Linear -> [BN] -> ReLU -> [Dropout] for each consecutive pair in sizes."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i > 0 or bn_first:
            layers.append(nn.BatchNorm1d(b))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


class Generator(Redrawable):
    def __init__(self, n_layers: int, size: int, z_dim: int, init_std: float = 0.02):
        super().__init__()
        if n_layers < 2:
            raise ValueError("nLayerG must be >= 2")
        sizes = [z_dim] + [size] * (n_layers - 1)
        # G's first layer is followed by BN: only its output layer goes without.
        self.body = nn.Sequential(*_hidden_stack(sizes, bn_first=True, dropout=0.0))
        self.out = nn.Linear(size, IMAGE_DIM)
        self.init_std = init_std
        _init(self, init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.body(z)))  # (N, z_dim) -> (N, 1024)


class MLPDiscriminator(Redrawable):
    """GAN discriminator: a logit per sample."""

    def __init__(self, n_layers: int, size: int, dropout: float, init_std: float = 0.002):
        super().__init__()
        if n_layers < 2:
            raise ValueError("nLayerD must be >= 2")
        sizes = [IMAGE_DIM] + [size] * (n_layers - 1)
        self.body = nn.Sequential(*_hidden_stack(sizes, bn_first=False, dropout=dropout))
        self.out = nn.Linear(size, 1)
        self.init_std = init_std
        _init(self, init_std)

    def forward(self, x: torch.Tensor) -> DOut:
        return DOut(self.out(self.body(x)).squeeze(1), None)  # (N, 1024) -> (N,)


class AutoEncoderDiscriminator(Redrawable):
    """EBGAN discriminator: energy = reconstruction error of an auto-encoder.

    energy_norm picks the paper-silent detail of ||Dec(Enc(x)) - x||:
      "l2"         the Euclidean norm per sample (the paper's formula; default)
      "l2_squared" its square (sum of squared errors)
      "mse"        the mean squared error per pixel (what many public ports use)
      "l1"         the mean absolute error per pixel (BEGAN's L(v) = |v - D(v)|)
    The code used by the pulling-away term is the encoder output, i.e. exactly
    the decoder's input (after ReLU and, with dropoutD and dropout_code, after dropout).
    """

    def __init__(self, n_layers: int, size: int, dropout: float, energy_norm: str,
                 init_std: float = 0.002, dropout_code: bool = True):
        super().__init__()
        if n_layers < 2:
            raise ValueError("nLayerD must be >= 2 (one encoder and one decoder layer)")
        if energy_norm not in ENERGY_NORMS:
            raise ValueError(f"energy_norm must be one of {ENERGY_NORMS}, got {energy_norm!r}")
        sizes = [IMAGE_DIM] + [size] * (n_layers - 1)
        self.encoder = without_code_dropout(
            nn.Sequential(*_hidden_stack(sizes, bn_first=False, dropout=dropout)), dropout_code)
        self.decoder = nn.Linear(size, IMAGE_DIM)
        self.energy_norm, self.init_std = energy_norm, init_std
        _init(self, init_std)

    def forward(self, x: torch.Tensor) -> DOut:
        code = self.encoder(x)  # (N, sizeD)
        recon = self.decoder(code)  # (N, 1024)
        return DOut(reconstruction_energy(recon, x, self.energy_norm), code)


def without_code_dropout(encoder: nn.Sequential, dropout_code: bool) -> nn.Sequential:
    """An auto-encoder's encoder, without the dropout on its code when dropout_code is false.

    dropoutD puts dropout after every hidden activation; on the encoder's last one it
    masks the code the decoder reconstructs from, which keeps the energy of real data
    high (the `dropout_code` setting). Parameter names are unchanged either way.
    """
    if dropout_code or not isinstance(encoder[-1], nn.Dropout):
        return encoder
    return nn.Sequential(*list(encoder)[:-1])


def reconstruction_energy(recon: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample energy of an auto-encoder D: (..., N, 1024) and (..., N, 1024) -> (..., N).

    Shared by the fully-connected and the DCGAN auto-encoders, so both read
    energy_norm the same way (see AutoEncoderDiscriminator for the choices).
    """
    if norm == "l1":
        return (recon - x).abs().mean(dim=-1)
    sq = (recon - x).pow(2).sum(dim=-1)  # (..., N)
    if norm == "l2":
        # sqrt has an infinite gradient at 0; the epsilon only matters for a
        # perfect reconstruction, which never happens in practice.
        return torch.sqrt(sq + 1e-12)
    if norm == "l2_squared":
        return sq
    return sq / IMAGE_DIM


def discriminate(d: Callable[[torch.Tensor], DOut], real: torch.Tensor, fake: torch.Tensor,
                 d_batch: str) -> tuple[DOut, DOut]:
    """D's outputs on a real and a generated batch, (..., B, 1024) each -> (..., B) scores.

    The paper does not say how D's batches are formed (the `d_batch` setting):
      "joint"     one pass over [real; fake] (..., 2B, 1024): D's batch norm normalises
                  both halves with the same batch statistics, so what every generated
                  sample shares (a grey background, saturation, one image) stays visible
                  to D, and its gradient reaches G;
      "separate"  two passes, each batch normalised by its own statistics (the DCGAN code's
                  habit). Batch norm over an all-generated batch removes each feature's
                  batch mean, and its backward pass removes the batch-mean part of the
                  gradient: G gets no signal against an error all its samples share.
    Leading axes (a pack's K) pass through; batch norm reduces over the batch axis only.
    """
    if d_batch == "separate":
        return d(real), d(fake)
    if d_batch != "joint":
        raise ValueError(f"d_batch must be one of {D_BATCHES}, got {d_batch!r}")
    b = real.shape[-2]
    out = d(torch.cat([real, fake], dim=-2))  # score (..., 2B), code (..., 2B, C)
    code = out.code
    return (DOut(out.score[..., :b], None if code is None else code[..., :b, :]),
            DOut(out.score[..., b:], None if code is None else code[..., b:, :]))
