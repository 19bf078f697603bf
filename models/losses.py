"""Losses of the GAN families, picked by name from one registry.

Every family has the same signature (compare_gan style): the losses are
functions of the discriminator's outputs only (`DOut`: a per-sample score and,
for auto-encoder discriminators, the encoder code), so GAN, EBGAN and EBGAN-PT
share one training loop (sweep/train/loop.py).

    d_loss(real: DOut, fake: DOut, hp) -> scalar   (fake computed from G(z).detach())
    g_loss(fake: DOut, hp) -> scalar               (fake computed from G(z))

Scores may carry leading axes, (K, N) for a pack of K points (models/stacked.py):
every loss reduces over the batch axis N only and returns one loss per point (K,).

Formulas (../shared/PAPER.md):
  GAN       L_D = -log sigma(D(x)) - log(1 - sigma(D(G(z))));  L_G = -log sigma(D(G(z)))
            (the non-saturating generator loss of Goodfellow et al. 2014)
  EBGAN     L_D = D(x) + [m - D(G(z))]^+;  L_G = D(G(z))      (per sample, batch mean)
  EBGAN-PT  EBGAN, plus pt_weight * f_PT(S) in L_G only, S = encoder codes of G(z)
  BEGAN     L_D = L(x) - k_t L(G(z_D));  L_G = L(G(z_G)), L = the pixel-wise L1 energy;
            k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1), k_0 = 0
            (the BEGAN paper, eq. 4: z_D and z_G drawn apart, `Family.separate_z`; L(x) and
            L(G(z_G)) of k_t's update both measured by D as the step found it, before D's
            update; the G update itself follows D's, as for every family)

Stateful families (BEGAN's k_t) keep their state in a `Balance` object that the
loop creates once per trial (`Family.new_state`), passes to both losses, steps
after every G update (`Balance.step`) and saves with the checkpoint.

Families are entries of one registry (models/registry.py): `register_family(Family(...))`
adds one, from this file or from a plugin, with its label, colour and paper rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from models.networks import D_BATCHES, DOut
from models.registry import PluginError, Registry


@dataclass(frozen=True)
class LossParams:
    """The loss hyper-parameters a family may read."""

    margin: float  # EBGAN hinge margin m (the paper: 10, not tuned)
    pt_weight: float  # weight of the pulling-away term in L_G (the paper: 0.1)
    gamma: float = 0.5  # BEGAN diversity ratio gamma = E[L(G(z))] / E[L(x)] it steers to
    lambda_k: float = 0.001  # BEGAN proportional gain of the k_t update


def pulling_away_term(s: torch.Tensor) -> torch.Tensor:
    """f_PT(S) = 1/(N(N-1)) sum_i sum_{j!=i} (S_i.S_j / (|S_i||S_j|))^2.

    Rows are normalised (each sample's code to unit length), the cosine is
    squared, and the diagonal (j == i, always 1) is excluded: the three places
    where public implementations go wrong.
    """
    n = s.shape[-2]
    if n < 2:
        raise ValueError("the pulling-away term needs a batch of at least 2 samples")
    unit = F.normalize(s, dim=-1, eps=1e-12)  # (..., N, h), each row of norm 1
    cos = unit @ unit.transpose(-1, -2)  # (..., N, N) cosine similarities, diagonal == 1
    off_diag_sq_sum = cos.pow(2).sum((-1, -2)) - cos.diagonal(dim1=-2, dim2=-1).pow(2).sum(-1)
    return off_diag_sq_sum / (n * (n - 1))


# --- BEGAN's equilibrium -------------------------------------------------------
def began_k_update(k, l_real, l_fake, gamma: float, lambda_k: float):
    """k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1)."""
    return torch.clamp(k + lambda_k * (gamma * l_real - l_fake), 0.0, 1.0)


def began_m_global(l_real, l_fake, gamma: float):
    """The convergence measure M_global = L(x) + |gamma L(x) - L(G(z))|."""
    return l_real + torch.abs(gamma * l_real - l_fake)


class Balance:
    """BEGAN's k_t, a 0-d tensor on the trial's device (no host sync per step); (K,) in a pack."""

    def __init__(self, device, k: float = 0.0):
        self.k = torch.tensor(float(k), device=device)

    def step(self, real: DOut, fake: DOut, hp: LossParams) -> dict[str, torch.Tensor]:
        l_real, l_fake = real.score.detach().mean(-1), fake.score.detach().mean(-1)
        m_global = began_m_global(l_real, l_fake, hp.gamma)
        self.k = began_k_update(self.k, l_real, l_fake, hp.gamma, hp.lambda_k)
        return {"m_global": m_global, "k_t": self.k}


# --- GAN ---------------------------------------------------------------------
def gan_d_loss(real: DOut, fake: DOut, hp: LossParams, state=None) -> torch.Tensor:
    # -log sigma(a) = softplus(-a); -log(1 - sigma(a)) = softplus(a)
    return F.softplus(-real.score).mean(-1) + F.softplus(fake.score).mean(-1)


def gan_g_loss(fake: DOut, hp: LossParams, state=None) -> torch.Tensor:
    return F.softplus(-fake.score).mean(-1)


# --- EBGAN -------------------------------------------------------------------
def ebgan_d_loss(real: DOut, fake: DOut, hp: LossParams, state=None) -> torch.Tensor:
    return (real.score + torch.clamp(hp.margin - fake.score, min=0.0)).mean(-1)


def ebgan_g_loss(fake: DOut, hp: LossParams, state=None) -> torch.Tensor:
    return fake.score.mean(-1)


def ebgan_pt_g_loss(fake: DOut, hp: LossParams, state=None) -> torch.Tensor:
    assert fake.code is not None, "EBGAN-PT needs an auto-encoder discriminator"
    return fake.score.mean(-1) + hp.pt_weight * pulling_away_term(fake.code)


# --- BEGAN -------------------------------------------------------------------
def began_d_loss(real: DOut, fake: DOut, hp: LossParams, state: Balance) -> torch.Tensor:
    return real.score.mean(-1) - state.k * fake.score.mean(-1)


def began_g_loss(fake: DOut, hp: LossParams, state: Balance) -> torch.Tensor:
    return fake.score.mean(-1)


# --- the paper's restriction of EBGAN points (Table 1) ----------------------------
PAPER_EBGAN_RULES = "EBGANs use adam/adam with lr 0.001 and margin 10 in the paper"


def ebgan_paper_rule(cfg) -> str | None:
    """Why an EBGAN point lies outside the paper's grid, or None (cfg: a TrialConfig)."""
    if cfg.optimD != "adam" or cfg.optimG != "adam":
        return f"optimD/optimG: {PAPER_EBGAN_RULES} (got {cfg.optimD}/{cfg.optimG})"
    if cfg.lr != 0.001:
        return f"lr: {PAPER_EBGAN_RULES} (got {cfg.lr:g})"
    if cfg.margin != 10.0:
        return f"margin: {PAPER_EBGAN_RULES} (got {cfg.margin:g})"
    return None


DISCRIMINATOR_KINDS = ("logit", "autoencoder")


@dataclass(frozen=True)
class Family:
    """One GAN family: its losses and everything the rest of gansweep asks about it."""

    name: str  # the config's `family` value (lower case, digits, '_')
    discriminator: str  # "logit" (a classifier, one output) or "autoencoder" (an energy; also its code)
    d_loss: Callable[..., torch.Tensor]  # (real, fake, hp, state) -> (K,) or scalar
    g_loss: Callable[..., torch.Tensor]  # (fake, hp, state) -> (K,) or scalar
    description: str
    label: str = ""  # how the report names it ("EBGAN-PT"); default: the name upper-cased
    color: str = "gray"  # its colour in every figure
    energy: str = "l2"  # the energy the family's paper uses ("auto" energy_norm resolves to it)
    new_state: Callable[..., Balance] | None = None  # (device) -> state, for stateful families
    separate_z: bool = False  # the G step draws its own z (BEGAN's z_G); else it reuses the D step's G(z)
    hinged: bool = False  # D's loss holds the fake energy up to the margin m (EBGAN's [m - D(G(z))]^+)
    paper_rule: Callable[..., str | None] | None = None  # (cfg) -> why cfg is outside the paper's grid, or None
    # what the d_batch setting's "auto" means for this family: "joint" ([real; generated] through D's
    # batch norm in one pass) or "separate"; default: joint for a logit D, separate for an auto-encoder
    # (measured on GAN, EBGAN, EBGAN-PT and BEGAN: docs/reproduction.md, section 1)
    d_batch: str = ""

    def __post_init__(self):
        if self.discriminator not in DISCRIMINATOR_KINDS:
            raise PluginError(f"family {self.name!r}: discriminator {self.discriminator!r} is not one of "
                              f"{', '.join(DISCRIMINATOR_KINDS)}")
        if not self.d_batch:
            object.__setattr__(self, "d_batch", "joint" if self.discriminator == "logit" else "separate")
        if self.d_batch not in D_BATCHES:
            raise PluginError(f"family {self.name!r}: d_batch {self.d_batch!r} is not one of {', '.join(D_BATCHES)}")
        if not self.label:
            object.__setattr__(self, "label", self.name.upper())


FAMILIES = Registry("family")


def register_family(family: Family, replace: bool = False) -> Family:
    """Add a family: from then on it is a `family` choice, plans, trains, scores and reports."""
    return FAMILIES.register(family, replace)


for _f in (
    Family("gan", "logit", gan_d_loss, gan_g_loss, "GAN, non-saturating generator loss",
           label="GAN", color="#d62728"),
    Family("ebgan", "autoencoder", ebgan_d_loss, ebgan_g_loss, "EBGAN, auto-encoder energy with hinge margin m",
           label="EBGAN", color="#1f77b4", hinged=True, paper_rule=ebgan_paper_rule),
    Family("ebgan_pt", "autoencoder", ebgan_d_loss, ebgan_pt_g_loss,
           "EBGAN with the pulling-away term in the generator loss",
           label="EBGAN-PT", color="#2ca02c", hinged=True, paper_rule=ebgan_paper_rule),
    Family("began", "autoencoder", began_d_loss, began_g_loss,
           "BEGAN, pixel-wise L1 energy, k_t balanced by proportional control",
           label="BEGAN", color="#9467bd", energy="l1", new_state=Balance, separate_z=True),
):
    register_family(_f)


def get_family(name: str) -> Family:
    return FAMILIES.get_or_raise(name)
