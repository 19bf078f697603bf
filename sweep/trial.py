"""Trials: build G and D for a grid point, train, score after every epoch; alone or in a pack.

    gansweep trial --family ebgan --n-layer-g 3 --n-layer-d 2 --size-g 400 --size-d 128 --epochs 1

This is the only training loop in gansweep: every family (GAN, EBGAN,
EBGAN-PT, BEGAN) on either arch (mlp, dcgan) trains through `PointRun`.
`run_pack` trains a pack of points epoch by epoch (a Ray trial of the sweep,
sweep/worker.py); `run_trial`, a pack of one, is what `gansweep trial` runs.
The loop:

  * holds the training images as one tensor on the trial's device (no DataLoader);
  * per step: a D update on a real batch and G(z).detach(), then a G update
    through the same G(z) (D's parameters frozen for it); a family with
    `separate_z` (BEGAN, as its paper) draws a second z_G for the G update;
  * checks losses for NaN/inf without a device sync per step; a non-finite loss
    or sample ends the point as `diverged`, keeping every epoch measured so far
    (the other points of its pack go on);
  * after each epoch, scores `n_eval` samples from fixed noise (never training
    batches) and hands the epoch's metrics and a lazily built checkpoint to
    `on_epoch`. Resuming from such a checkpoint continues bit-for-bit.

Every point draws from its own RNG streams (PointRun), so a point inside a pack
trains exactly as alone. Fully-connected points train as one stacked model
(sweep/pack_trainer.py; a lone one as a stack of one); DCGAN points one after another.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

from models.archs import get_arch
from models.losses import LossParams, get_family
from models.metrics import SCORE_KEYS, Scorer, ScoreSettings
from models.networks import discriminate
from sweep.config import TrialConfig
from sweep.data import to_model_space
from sweep.schema import DIVERGED, OK

# How often (in steps) the loop checks its on-device non-finite flag. A check
# is a device sync; every 50 steps costs nothing measurable and bounds the work
# wasted after a divergence.
DIVERGENCE_CHECK_EVERY = 50
N_KEPT_SAMPLES = 64  # samples kept per evaluation for sample grids (Figure 4)


def build_models(cfg: TrialConfig, device: torch.device):
    """The family's losses, and G and D of the config's arch (models/archs.py): every arch takes
    and returns flattened (N, 1024) images, so nothing below depends on the arch."""
    fam, arch = get_family(cfg.family), get_arch(cfg.arch)
    g = arch.generator(cfg.nLayerG, cfg.sizeG, cfg.z_dim)
    dropout = cfg.dropout_rate if cfg.dropoutD else 0.0
    if fam.discriminator == "logit":
        d = arch.logit_d(cfg.nLayerD, cfg.sizeD, dropout)
    else:
        d = arch.autoencoder_d(cfg.nLayerD, cfg.sizeD, dropout, cfg.energy_norm, dropout_code=cfg.dropout_code)
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


def eval_noise(cfg: TrialConfig, device) -> torch.Tensor:
    """(n_eval, z_dim): the fixed noise a point's samples are scored from, after every epoch."""
    return sample_noise(cfg, cfg.n_eval, torch.Generator(device=device).manual_seed(cfg.seed + 1_000_003), device)


def eval_chunks(cfg: TrialConfig) -> list[tuple[int, int]]:
    """The slices of the n_eval samples that G draws at once.

    sample_bn eval: 2,000 (batch norm uses its running statistics, so the size changes
    nothing but memory). train: batch_size, so each sample is normalised by batch
    statistics of a batch like those G saw in training; a last slice of one sample joins
    the one before it (batch statistics need two).
    """
    size = 2000 if cfg.sample_bn == "eval" else cfg.batch_size
    starts = list(range(0, cfg.n_eval, size))
    if len(starts) > 1 and cfg.n_eval - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, starts[1:] + [cfg.n_eval]))


def draw_samples(g: torch.nn.Module, z: torch.Tensor, cfg: TrialConfig) -> torch.Tensor:
    """(n_eval, 1024): a module G's samples for scoring from its fixed noise z, batch norm as
    cfg.sample_bn says (the stacked path draws in PackedTrainer.samples)."""
    with torch.no_grad(), sampling_mode(g, cfg.sample_bn):
        return torch.cat([g(z[a:b]) for a, b in eval_chunks(cfg)])


@contextmanager
def sampling_mode(g: torch.nn.Module, sample_bn: str):
    """G set up to draw samples for scoring: eval mode, or (train) its batch norm layers on
    batch statistics with their running statistics left untouched."""
    bns = [m for m in g.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    g.eval()
    if sample_bn == "train":
        for m in bns:  # a training-mode BN without tracking normalises by the batch, updates nothing
            m.train()
            m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


@dataclass
class TrialOutcome:
    status: str  # OK or DIVERGED (sweep/schema.py)
    history: list[dict]  # one dict of metrics per scored epoch
    samples: torch.Tensor | None  # (64, 32, 32) uint8 from the last scored epoch
    train_seconds: float
    eval_seconds: float
    reason: str = ""  # why a trial diverged


def prepare_data(train_images_u8: torch.Tensor, n_train: int, device) -> torch.Tensor:
    """uint8 (N, 28, 28) MNIST -> the first n_train images as (n_train, 1024) floats on device."""
    return to_model_space(train_images_u8[:n_train], device).flatten(1)


WEIGHT_KEYS = ("G", "D", "opt_G", "opt_D")  # what a finished point's checkpoint may drop


def finished_status(state: dict, cfg: TrialConfig) -> tuple[str, str]:
    """(OK or DIVERGED, reason) of a point from its checkpoint state; ("", "") if unfinished."""
    last = state["history"][-1] if state["history"] else {}  # a diverged epoch has a "diverged" key
    if "diverged" in last:
        return DIVERGED, last["diverged"]
    return (OK, "") if state["epoch"] >= cfg.epochs else ("", "")


class PointRun:
    """One grid point's training state: nets, optimizers, its RNG streams, what it measured.

    Every random draw of a point comes from its own streams: `gen` (data order and
    noise), `eval_gen` (the fixed evaluation noise) and a private copy of torch's
    global RNG (weight init, dropout masks), swapped in around the point's work. So a
    point trains identically alone or beside others in a pack, and a checkpoint
    restores every stream (dropout masks included) for a bit-identical resume.
    """

    def __init__(self, cfg: TrialConfig, data: torch.Tensor, device: torch.device, resume: dict | None = None):
        self.cfg, self.data, self.device = cfg, data[:cfg.n_train], device
        self.epoch, self.history, self.samples = 0, [], None
        self.train_seconds = self.eval_seconds = 0.0
        self.status, self.reason = "", ""  # set when the point is done (OK or DIVERGED)
        if resume is not None:
            self.epoch, self.history = resume["epoch"], list(resume["history"])
            self.train_seconds, self.eval_seconds = resume["train_seconds"], resume["eval_seconds"]
            self.samples = resume.get("samples")
            self.status, self.reason = finished_status(resume, cfg)
            if self.status:  # a finished point's checkpoint may hold no weights: build nothing
                return
        self._rng = self._seeded_rng()
        with self.own_rng():
            self.fam, self.g, self.d = build_models(cfg, device)
        self.opt_g = make_optimizer(cfg.optimG, self.g.parameters(), cfg)
        self.opt_d = make_optimizer(cfg.optimD, self.d.parameters(), cfg)
        self.hp = LossParams(margin=cfg.margin, pt_weight=cfg.pt_weight, gamma=cfg.began_gamma,
                             lambda_k=cfg.began_lambda_k)
        self.state = self.fam.new_state(device) if self.fam.new_state else None  # BEGAN's k_t
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.eval_z = eval_noise(cfg, device)  # fixed for the whole trial
        self.score_settings = ScoreSettings(eps=cfg.prob_eps, coverage_min_frac=cfg.coverage_min_frac)
        if resume is not None:
            self.g.load_state_dict(resume["G"])
            self.d.load_state_dict(resume["D"])
            self.opt_g.load_state_dict(resume["opt_G"])
            self.opt_d.load_state_dict(resume["opt_D"])
            self.gen.set_state(resume["rng"])
            if resume.get("torch_rng") is not None:  # checkpoints before 0.5 lack it
                self._rng = [t.cpu() for t in resume["torch_rng"]]
            if self.state is not None:
                self.state.k = resume["k"].to(device)

    @property
    def done(self) -> bool:
        return bool(self.status)

    # ---------------------------------------------------------------- RNG
    def _seeded_rng(self) -> list[torch.Tensor]:
        """torch's global RNG state(s) right after torch.manual_seed(seed), the outer state kept."""
        outer = self._global_rng()
        torch.manual_seed(self.cfg.seed)
        mine = self._global_rng()
        self._set_global_rng(outer)
        return mine

    def _global_rng(self) -> list[torch.Tensor]:
        states = [torch.get_rng_state()]
        if self.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.device))
        return states

    def _set_global_rng(self, states: list[torch.Tensor]) -> None:
        torch.set_rng_state(states[0])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(states[1], self.device)

    @contextmanager
    def own_rng(self):
        """torch's global RNG is this point's private stream inside the block."""
        outer = self._global_rng()
        self._set_global_rng(self._rng)
        try:
            yield
        finally:
            self._rng = self._global_rng()
            self._set_global_rng(outer)

    # ---------------------------------------------------------------- one epoch
    def train_epoch(self) -> dict:
        """One pass over the training subset; returns the epoch's metrics (unscored)."""
        with self.own_rng():
            return self._train_epoch()

    def _train_epoch(self) -> dict:
        cfg, device, g, d, fam, hp, state = self.cfg, self.device, self.g, self.d, self.fam, self.hp, self.state
        n_steps = cfg.n_train // cfg.batch_size  # the last incomplete batch is dropped (BN, PT need > 1)
        d_params = list(d.parameters())
        t0 = time.perf_counter()
        g.train(), d.train()
        perm = torch.randperm(cfg.n_train, generator=self.gen, device=device)
        sums = torch.zeros(5, device=device)  # loss_d, loss_g, D(x), D(G(z)), M_global over steps
        bad = torch.zeros((), dtype=torch.bool, device=device)
        for step in range(n_steps):
            x = self.data[perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]]  # (B, 1024)
            z = sample_noise(cfg, cfg.batch_size, self.gen, device)  # (B, z_dim)
            fake = g(z)  # (B, 1024)
            fake_g = g(sample_noise(cfg, cfg.batch_size, self.gen, device)) if fam.separate_z else fake  # z_G

            real_out, fake_out = discriminate(d, x, fake.detach(), cfg.d_batch)  # (B,) scores each
            if state is not None:  # BEGAN: k_t reads L(G(z_G)) from the D that L(x) came from
                with torch.no_grad():
                    fake_out_k = discriminate(d, x, fake_g.detach(), cfg.d_batch)[1]
            loss_d = fam.d_loss(real_out, fake_out, hp, state)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()

            # G step through the same fake; D's weights need no gradient here.
            for prm in d_params:
                prm.requires_grad_(False)
            fake_out_g = discriminate(d, x, fake_g, cfg.d_batch)[1]  # joint: beside the real batch again
            loss_g = fam.g_loss(fake_out_g, hp, state)
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            for prm in d_params:
                prm.requires_grad_(True)
            # BEGAN: M_global of this step, then k_t moves towards the equilibrium
            m_global = state.step(real_out, fake_out_k, hp)["m_global"] if state is not None \
                else torch.zeros((), device=device)

            step_vals = torch.stack([loss_d.detach(), loss_g.detach(), real_out.score.detach().mean(),
                                     fake_out.score.detach().mean(), m_global])
            sums += step_vals
            bad |= ~torch.isfinite(step_vals).all()
            if (step + 1) % DIVERGENCE_CHECK_EVERY == 0 and bad.item():
                break
        self.train_seconds += time.perf_counter() - t0
        self.epoch += 1
        means = (sums / n_steps).tolist()
        metrics = {"epoch": self.epoch, "loss_d": means[0], "loss_g": means[1],
                   "d_real": means[2], "d_fake": means[3],
                   "m_global": means[4] if state is not None else math.nan,
                   "k_t": state.k.item() if state is not None else math.nan}
        if bad.item():
            return self.mark_diverged(metrics, "non-finite loss")
        return metrics

    def scores_now(self) -> bool:
        return not self.done and (self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs)

    def evaluate(self, metrics: dict, scorer: Scorer, samples: torch.Tensor | None = None) -> dict:
        """Score `n_eval` samples from the fixed noise (G's batch norm as `sample_bn` says);
        a pack passes the samples its stacked G drew."""
        t1 = time.perf_counter()
        if samples is None:
            samples = draw_samples(self.g, self.eval_z, self.cfg)  # (n_eval, 1024)
        if not torch.isfinite(samples).all():
            self.eval_seconds += time.perf_counter() - t1
            return self.mark_diverged(metrics, "non-finite samples")
        metrics.update(scorer.score(samples.view(-1, 1, 32, 32), self.score_settings))
        self.samples = to_uint8(samples[:N_KEPT_SAMPLES])
        self.eval_seconds += time.perf_counter() - t1
        metrics.update(train_seconds=self.train_seconds, eval_seconds=self.eval_seconds)
        self.history.append(metrics)
        if self.epoch >= self.cfg.epochs:
            self.status = OK
        return metrics

    def mark_diverged(self, metrics: dict, reason: str) -> dict:
        # Keep what was measured: the losses up to the divergence are reported with
        # NaN scores, and the earlier epochs' scores stay in the history.
        metrics.update({k: math.nan for k in SCORE_KEYS})
        metrics.update(train_seconds=self.train_seconds, eval_seconds=self.eval_seconds, diverged=reason)
        self.history.append(metrics)
        self.status, self.reason = DIVERGED, reason
        return metrics

    # ---------------------------------------------------------------- checkpoint
    def checkpoint(self) -> dict:
        """Everything `PointRun(resume=...)` needs (torch.save / weights_only=True compatible).
        A finished point's holds no weights (WEIGHT_KEYS); sweep/worker.py may keep G's."""
        out = {"epoch": self.epoch, "history": self.history, "train_seconds": self.train_seconds,
               "eval_seconds": self.eval_seconds, "samples": self.samples, "config": self.cfg.as_dict()}
        if not hasattr(self, "g"):  # restored finished, never built
            return out
        out.update(rng=self.gen.get_state(), torch_rng=self._rng,
                   k=self.state.k if self.state is not None else None)
        if not self.done:
            out.update(G=self.g.state_dict(), D=self.d.state_dict(), opt_G=self.opt_g.state_dict(),
                       opt_D=self.opt_d.state_dict())
        return out

    def generator_weights(self) -> dict | None:
        return self.g.state_dict() if hasattr(self, "g") else None

    def outcome(self) -> TrialOutcome:
        return TrialOutcome(self.status or OK, self.history, self.samples, self.train_seconds,
                            self.eval_seconds, self.reason)


def start_pack(cfgs: list[TrialConfig], train_images: torch.Tensor, device: str | torch.device = "cpu",
               resume: list[dict | None] | None = None) -> list[PointRun]:
    """The PointRuns of a pack, built (or restored from `PointRun.checkpoint()` states).

    train_images: uint8 (N, 28, 28) MNIST training images, or the output of
    `prepare_data` (float (>= n_train, 1024) on `device`), which a process running
    many trials prepares once.
    """
    device = torch.device(device)
    if len({c.tf32 for c in cfgs}) > 1:
        raise ValueError("the points of a pack share the tf32 setting")
    # process-wide switches: set for every pack, so a reused worker never keeps another run's
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfgs[0].tf32
    if train_images.dtype == torch.uint8:
        data = prepare_data(train_images, max(c.n_train for c in cfgs), device)  # (n_train, 1024) in [-1, 1]
    else:
        data = train_images
    resume = resume or [None] * len(cfgs)
    return [PointRun(cfg, data, device, r) for cfg, r in zip(cfgs, resume)]


def train_pack(runs: list[PointRun], scorer: Scorer,
               on_epoch: Callable[[dict[int, dict], Callable[[], list[dict]]], None] | None = None) -> None:
    """Train a pack epoch by epoch, each point exactly as it would train alone.

    on_epoch(reported, make_checkpoint) is called after every epoch in which some point
    scored or diverged: reported maps a point's index to that epoch's metrics, and
    make_checkpoint() returns one `PointRun.checkpoint()` per point, in order, which
    `start_pack(resume=...)` accepts. A diverged point stops; the others go on.
    """
    from sweep.pack_trainer import PackedTrainer, packable

    stacked = PackedTrainer(runs) if packable(runs) else None

    def checkpoint() -> list[dict]:
        if stacked is not None:
            stacked.write_back()
        return [r.checkpoint() for r in runs]

    index = {r: i for i, r in enumerate(runs)}
    while not all(r.done for r in runs):
        reported: dict[int, dict] = {}
        if stacked is not None:  # the whole pack in batched kernels (sweep/pack_trainer.py)
            epoch = stacked.train_epoch()  # points that diverged have left the pack
            scored = [r for r in stacked.runs if r.scores_now()]  # all or none: eval_every is shared
            if scored:
                t1 = time.perf_counter()
                samples = stacked.samples()  # (K, n_eval, 1024)
                share = (time.perf_counter() - t1) / len(scored)
                for r, s in zip(scored, samples):
                    r.eval_seconds += share
                    r.evaluate(epoch[r], scorer, s)
                stacked.drop_done()  # non-finite samples
            reported = {index[r]: m for r, m in epoch.items() if r.done or r in scored}
        else:  # one point after another (DCGAN nets, SGD with momentum)
            for i, r in enumerate(runs):
                if r.done:
                    continue
                metrics = r.train_epoch()
                if r.done:  # diverged in this epoch
                    reported[i] = metrics
                elif r.scores_now():
                    reported[i] = r.evaluate(metrics, scorer)
        if reported and on_epoch is not None:
            on_epoch(dict(sorted(reported.items())), checkpoint)


def run_pack(cfgs: list[TrialConfig], train_images: torch.Tensor, scorer: Scorer,
             device: str | torch.device = "cpu", *, resume: list[dict | None] | None = None,
             on_epoch=None) -> list[PointRun]:
    """start_pack + train_pack: the pack's PointRuns, trained."""
    runs = start_pack(cfgs, train_images, device, resume)
    train_pack(runs, scorer, on_epoch)
    return runs


def run_trial(cfg: TrialConfig, train_images: torch.Tensor, scorer: Scorer,
              device: str | torch.device = "cpu", *, resume: dict | None = None,
              on_epoch: Callable[[dict, Callable[[], dict]], None] | None = None) -> TrialOutcome:
    """Train one grid point: a pack of one.

    on_epoch(metrics, make_checkpoint) is called after each scored epoch;
    make_checkpoint() returns a dict of tensors and plain values that `resume`
    accepts (torch.save / torch.load(weights_only=True) compatible).
    """
    def one(reported, make_checkpoint):
        on_epoch(reported[0], lambda: make_checkpoint()[0])

    run, = run_pack([cfg], train_images, scorer, device, resume=[resume],
                    on_epoch=one if on_epoch is not None else None)
    return run.outcome()
