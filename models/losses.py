"""Losses of the GAN families, picked by name from one registry.

Every family has the same signature (compare_gan style): the losses are
functions of the discriminator's outputs only (`DOut`: a per-sample score and,
for auto-encoder discriminators, the encoder code), so GAN, EBGAN and EBGAN-PT
share one training loop (sweep/trial.py).

    d_loss(real: DOut, fake: DOut, hp) -> scalar   (fake computed from G(z).detach())
    g_loss(fake: DOut, hp) -> scalar               (fake computed from G(z))

Formulas (../shared/PAPER.md):
  GAN       L_D = -log sigma(D(x)) - log(1 - sigma(D(G(z))));  L_G = -log sigma(D(G(z)))
            (the non-saturating generator loss of Goodfellow et al. 2014)
  EBGAN     L_D = D(x) + [m - D(G(z))]^+;  L_G = D(G(z))      (per sample, batch mean)
  EBGAN-PT  EBGAN, plus pt_weight * f_PT(S) in L_G only, S = encoder codes of G(z)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from models.networks import DOut


@dataclass(frozen=True)
class LossParams:
    """The loss hyper-parameters a family may read."""

    margin: float  # EBGAN hinge margin m (the paper: 10, not tuned)
    pt_weight: float  # weight of the pulling-away term in L_G (the paper: 0.1)


def pulling_away_term(s: torch.Tensor) -> torch.Tensor:
    """f_PT(S) = 1/(N(N-1)) sum_i sum_{j!=i} (S_i.S_j / (|S_i||S_j|))^2.

    Rows are normalised (each sample's code to unit length), the cosine is
    squared, and the diagonal (j == i, always 1) is excluded: the three places
    where public implementations go wrong.
    """
    n = s.shape[0]
    if n < 2:
        raise ValueError("the pulling-away term needs a batch of at least 2 samples")
    unit = F.normalize(s, dim=1, eps=1e-12)  # (N, h), each row of norm 1
    cos = unit @ unit.t()  # (N, N) cosine similarities, diagonal == 1
    off_diag_sq_sum = cos.pow(2).sum() - cos.diagonal().pow(2).sum()
    return off_diag_sq_sum / (n * (n - 1))


# --- GAN ---------------------------------------------------------------------
def gan_d_loss(real: DOut, fake: DOut, hp: LossParams) -> torch.Tensor:
    # -log sigma(a) = softplus(-a); -log(1 - sigma(a)) = softplus(a)
    return F.softplus(-real.score).mean() + F.softplus(fake.score).mean()


def gan_g_loss(fake: DOut, hp: LossParams) -> torch.Tensor:
    return F.softplus(-fake.score).mean()


# --- EBGAN -------------------------------------------------------------------
def ebgan_d_loss(real: DOut, fake: DOut, hp: LossParams) -> torch.Tensor:
    return (real.score + torch.clamp(hp.margin - fake.score, min=0.0)).mean()


def ebgan_g_loss(fake: DOut, hp: LossParams) -> torch.Tensor:
    return fake.score.mean()


def ebgan_pt_g_loss(fake: DOut, hp: LossParams) -> torch.Tensor:
    assert fake.code is not None, "EBGAN-PT needs an auto-encoder discriminator"
    return fake.score.mean() + hp.pt_weight * pulling_away_term(fake.code)


@dataclass(frozen=True)
class Family:
    name: str
    discriminator: str  # "mlp" (a logit) or "autoencoder" (an energy)
    d_loss: Callable[[DOut, DOut, LossParams], torch.Tensor]
    g_loss: Callable[[DOut, LossParams], torch.Tensor]
    description: str


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("gan", "mlp", gan_d_loss, gan_g_loss,
               "GAN, non-saturating generator loss"),
        Family("ebgan", "autoencoder", ebgan_d_loss, ebgan_g_loss,
               "EBGAN, auto-encoder energy with hinge margin m"),
        Family("ebgan_pt", "autoencoder", ebgan_d_loss, ebgan_pt_g_loss,
               "EBGAN with the pulling-away term in the generator loss"),
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}") from None
