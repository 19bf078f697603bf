"""One trial: build G and D for a grid point, train, score after every epoch.

    gansweep trial --family ebgan --nLayerG 3 --nLayerD 2 --sizeG 400 --sizeD 128 --epochs 1

This is the only training loop in gansweep: every family (GAN, EBGAN,
EBGAN-PT, BEGAN) on either arch (mlp, dcgan) runs through `run_trial`, which
the command line calls directly and the Ray trainable (sweep/worker.py) wraps.
The loop:

  * holds the training images as one tensor on the trial's device (no DataLoader);
  * per step: a D update on a real batch and G(z).detach(), then a G update
    through the same G(z) (D's parameters frozen for it);
  * checks losses for NaN/inf without a device sync per step; a non-finite loss
    or sample ends the trial as `diverged`, keeping every epoch measured so far;
  * after each epoch, scores `n_eval` samples from fixed noise (never training
    batches) and hands the epoch's metrics and a lazily built checkpoint to
    `on_epoch`. Resuming from such a checkpoint continues bit-for-bit.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from models.losses import LossParams, get_family
from models.dcgan import ConvAutoEncoderDiscriminator, ConvDiscriminator, ConvGenerator
from models.metrics import SCORE_KEYS, Scorer, ScoreSettings
from models.networks import AutoEncoderDiscriminator, Generator, MLPDiscriminator
from sweep.config import TrialConfig
from sweep.data import to_model_space
from sweep.schema import DIVERGED, OK

# How often (in steps) the loop checks its on-device non-finite flag. A check
# is a device sync; every 50 steps costs nothing measurable and bounds the work
# wasted after a divergence.
DIVERGENCE_CHECK_EVERY = 50
N_KEPT_SAMPLES = 64  # samples kept per evaluation for sample grids (Figure 4)


# arch -> (generator, logit discriminator, auto-encoder discriminator) classes; all
# take and return flattened (N, 1024) images, so nothing below depends on the arch.
ARCHS = {
    "mlp": (Generator, MLPDiscriminator, AutoEncoderDiscriminator),
    "dcgan": (ConvGenerator, ConvDiscriminator, ConvAutoEncoderDiscriminator),
}


def build_models(cfg: TrialConfig, device: torch.device):
    fam = get_family(cfg.family)
    gen_cls, logit_cls, ae_cls = ARCHS[cfg.arch]
    g = gen_cls(cfg.nLayerG, cfg.sizeG, cfg.z_dim)
    dropout = cfg.dropout_rate if cfg.dropoutD else 0.0
    if fam.discriminator == "logit":
        d = logit_cls(cfg.nLayerD, cfg.sizeD, dropout)
    else:
        d = ae_cls(cfg.nLayerD, cfg.sizeD, dropout, cfg.energy_norm)
    return fam, g.to(device), d.to(device)


def make_optimizer(name: str, params, cfg: TrialConfig) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.sgd_momentum)
    raise ValueError(f"unknown optimizer {name!r}")


def sample_noise(cfg: TrialConfig, n: int, gen: torch.Generator, device) -> torch.Tensor:
    if cfg.z_dist == "uniform":
        return torch.rand(n, cfg.z_dim, generator=gen, device=device).mul_(2).sub_(1)
    return torch.randn(n, cfg.z_dim, generator=gen, device=device)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 1024) or (N, 1, 32, 32) in [-1, 1] -> (N, 32, 32) uint8 on the CPU."""
    x = images.detach().reshape(-1, 32, 32).clamp(-1, 1).add(1).mul(127.5).round()
    return x.to(torch.uint8).cpu()


@dataclass
class TrialOutcome:
    status: str  # OK or DIVERGED (sweep/schema.py)
    history: list[dict]  # one dict of metrics per scored epoch
    samples: torch.Tensor | None  # (64, 32, 32) uint8 from the last scored epoch
    train_seconds: float
    eval_seconds: float
    reason: str = ""  # why a trial diverged


@dataclass
class _Progress:
    epoch: int = 0
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    samples: torch.Tensor | None = None


def prepare_data(train_images_u8: torch.Tensor, n_train: int, device) -> torch.Tensor:
    """uint8 (N, 28, 28) MNIST -> the first n_train images as (n_train, 1024) floats on device."""
    return to_model_space(train_images_u8[:n_train], device).flatten(1)


def run_trial(cfg: TrialConfig, train_images: torch.Tensor, scorer: Scorer,
              device: str | torch.device = "cpu", *, resume: dict | None = None,
              on_epoch: Callable[[dict, Callable[[], dict]], None] | None = None) -> TrialOutcome:
    """Train one grid point.

    train_images: uint8 (N, 28, 28) MNIST training images, or the output of
    `prepare_data` (float (>= n_train, 1024) on `device`), which a process running
    many trials prepares once.

    on_epoch(metrics, make_checkpoint) is called after each scored epoch;
    make_checkpoint() returns a dict of tensors and plain values that `resume`
    accepts (torch.save / torch.load(weights_only=True) compatible).
    """
    device = torch.device(device)
    torch.manual_seed(cfg.seed)  # weight init; everything else uses `gen` below
    fam, g, d = build_models(cfg, device)
    opt_g = make_optimizer(cfg.optimG, g.parameters(), cfg)
    opt_d = make_optimizer(cfg.optimD, d.parameters(), cfg)
    hp = LossParams(margin=cfg.margin, pt_weight=cfg.pt_weight, gamma=cfg.began_gamma,
                    lambda_k=cfg.began_lambda_k)
    state = fam.new_state(device) if fam.new_state else None  # BEGAN's k_t

    if train_images.dtype == torch.uint8:
        data = prepare_data(train_images, cfg.n_train, device)  # (n_train, 1024) in [-1, 1]
    else:
        data = train_images[:cfg.n_train]
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    eval_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1_000_003)
    eval_z = sample_noise(cfg, cfg.n_eval, eval_gen, device)  # fixed for the whole trial
    score_settings = ScoreSettings(eps=cfg.prob_eps, coverage_min_frac=cfg.coverage_min_frac)

    p = _Progress()
    if resume is not None:
        g.load_state_dict(resume["G"])
        d.load_state_dict(resume["D"])
        opt_g.load_state_dict(resume["opt_G"])
        opt_d.load_state_dict(resume["opt_D"])
        gen.set_state(resume["rng"])
        if state is not None:
            state.k = resume["k"].to(device)
        p = _Progress(resume["epoch"], list(resume["history"]), resume["train_seconds"],
                      resume["eval_seconds"], resume.get("samples"))

    def checkpoint() -> dict:
        return {"G": g.state_dict(), "D": d.state_dict(), "opt_G": opt_g.state_dict(),
                "opt_D": opt_d.state_dict(), "rng": gen.get_state(), "epoch": p.epoch,
                "history": p.history, "train_seconds": p.train_seconds,
                "eval_seconds": p.eval_seconds, "samples": p.samples, "config": cfg.as_dict(),
                "k": state.k if state is not None else None}

    n_steps = cfg.n_train // cfg.batch_size  # the last incomplete batch is dropped (BN, PT need > 1)
    d_params = list(d.parameters())
    while p.epoch < cfg.epochs:
        t0 = time.perf_counter()
        g.train(), d.train()
        perm = torch.randperm(cfg.n_train, generator=gen, device=device)
        sums = torch.zeros(5, device=device)  # loss_d, loss_g, D(x), D(G(z)), M_global over steps
        bad = torch.zeros((), dtype=torch.bool, device=device)
        for step in range(n_steps):
            x = data[perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]]  # (B, 1024)
            z = sample_noise(cfg, cfg.batch_size, gen, device)  # (B, z_dim)
            fake = g(z)  # (B, 1024)

            real_out, fake_out = d(x), d(fake.detach())
            loss_d = fam.d_loss(real_out, fake_out, hp, state)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            # G step through the same fake; D's weights need no gradient here.
            for prm in d_params:
                prm.requires_grad_(False)
            fake_out_g = d(fake)
            loss_g = fam.g_loss(fake_out_g, hp, state)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            for prm in d_params:
                prm.requires_grad_(True)
            # BEGAN: M_global of this step, then k_t moves towards the equilibrium
            m_global = state.step(real_out, fake_out_g, hp)["m_global"] if state is not None \
                else torch.zeros((), device=device)

            step_vals = torch.stack([loss_d.detach(), loss_g.detach(), real_out.score.detach().mean(),
                                     fake_out.score.detach().mean(), m_global])
            sums += step_vals
            bad |= ~torch.isfinite(step_vals).all()
            if (step + 1) % DIVERGENCE_CHECK_EVERY == 0 and bad.item():
                break
        p.train_seconds += time.perf_counter() - t0
        p.epoch += 1
        means = (sums / n_steps).tolist()
        metrics = {"epoch": p.epoch, "loss_d": means[0], "loss_g": means[1],
                   "d_real": means[2], "d_fake": means[3],
                   "m_global": means[4] if state is not None else math.nan,
                   "k_t": state.k.item() if state is not None else math.nan}
        if bad.item():
            return _diverged(p, metrics, "non-finite loss", on_epoch, checkpoint)

        if p.epoch % cfg.eval_every == 0 or p.epoch == cfg.epochs:
            t1 = time.perf_counter()
            g.eval()
            with torch.no_grad():
                samples = torch.cat([g(eval_z[i:i + 2000]) for i in range(0, cfg.n_eval, 2000)])
            if not torch.isfinite(samples).all():
                p.eval_seconds += time.perf_counter() - t1
                return _diverged(p, metrics, "non-finite samples", on_epoch, checkpoint)
            metrics.update(scorer.score(samples.view(-1, 1, 32, 32), score_settings))
            p.samples = to_uint8(samples[:N_KEPT_SAMPLES])
            p.eval_seconds += time.perf_counter() - t1
            metrics.update(train_seconds=p.train_seconds, eval_seconds=p.eval_seconds)
            p.history.append(metrics)
            if on_epoch is not None:
                on_epoch(metrics, checkpoint)
    return TrialOutcome(OK, p.history, p.samples, p.train_seconds, p.eval_seconds)


def _diverged(p: _Progress, metrics: dict, reason: str, on_epoch, checkpoint) -> TrialOutcome:
    # Keep what was measured: the losses up to the divergence are reported with
    # NaN scores, and the earlier epochs' scores stay in the history.
    metrics.update({k: math.nan for k in SCORE_KEYS})
    metrics.update(train_seconds=p.train_seconds, eval_seconds=p.eval_seconds, diverged=reason)
    p.history.append(metrics)
    if on_epoch is not None:
        on_epoch(metrics, checkpoint)
    return TrialOutcome(DIVERGED, p.history, p.samples, p.train_seconds, p.eval_seconds, reason)
