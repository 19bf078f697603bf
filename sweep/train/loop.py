"""The training loop of gansweep, written once: a stack of K points, step by step, epoch by epoch.

    gansweep trial --family ebgan --n-layer-g 3 --n-layer-d 2 --size-g 400 --size-d 128 --epochs 1

Every family (GAN, EBGAN, EBGAN-PT, BEGAN, plugins) on every arch trains through
`train_step` and `train_epoch` below. A Ray trial trains a pack (sweep/runner/worker.py), its
stacks one after another (points of one shape: the glossary in docs/architecture.md); `gansweep
trial` trains a stack of one (`run_stack`). The step, per point:

  * a D update on a real batch and G(z).detach(), D's batch norm seeing both in one pass
    or apart as `d_batch` says (models/networks.py discriminate);
  * then a G update through the same G(z), D's parameters frozen for it; a family with
    `separate_z` (BEGAN, as its paper) draws a second z_G for the G update, and its k_t
    reads L(x) and L(G(z_G)) of D as the step found it;
  * losses are checked for NaN/inf without a device sync per step: every
    DIVERGENCE_CHECK_EVERY steps, a point with a non-finite loss ends as `diverged`,
    keeping every epoch measured so far, and leaves the stack (the others go on).

After each epoch the points that score then draw `n_eval` samples from their fixed
noise (never training batches), are scored, and `on_epoch` gets the epoch's metrics
and a lazily built checkpoint, from which a point resumes bit-for-bit. The back-end
(sweep/train/backends.py) decides only how K points' nets run: stacked, or one module
after another. The training data is one tensor on the trial's device (no DataLoader).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from models.metrics import Scorer
from models.networks import discriminate
from sweep.plan.config import TrialConfig
from sweep.train.backends import backend_for
from sweep.train.point import (N_KEPT_SAMPLES, NetPool, PointRun, TrialOutcome, draw_samples, eval_noise, prepare_data,
                               sample_noise, to_uint8)

# How often (in steps) the loop checks its on-device non-finite flag. A check
# is a device sync; every 50 steps costs nothing measurable and bounds the work
# wasted after a divergence.
DIVERGENCE_CHECK_EVERY = 50
STEP_VALUES = ("loss_d", "loss_g", "d_real", "d_fake", "m_global")  # what train_step returns per point


def _noise(stack) -> torch.Tensor:
    """(K, B, z_dim): each point's next noise batch, from its own stream."""
    return torch.stack([sample_noise(r.cfg, stack.cfg.batch_size, r.gen, stack.device) for r in stack.runs])


def train_step(stack, x: torch.Tensor) -> torch.Tensor:
    """One D and one G update of every point of the stack on its real batch x (K, B, 1024);
    returns (K, 5): the STEP_VALUES of each point."""
    cfg, fam, hp, state = stack.cfg, stack.fam, stack.hp, stack.state
    fake = stack.g(_noise(stack))  # (K, B, 1024)
    fake_g = stack.g(_noise(stack)) if fam.separate_z else fake  # z_G, drawn after z_D, as alone

    real_out, fake_out = discriminate(stack.d, x, fake.detach(), cfg.d_batch)  # (K, B) scores each
    if state is not None:  # BEGAN: k_t reads L(G(z_G)) from the D that L(x) came from
        with torch.no_grad():
            fake_out_k = discriminate(stack.d, x, fake_g.detach(), cfg.d_batch)[1]
    loss_d = fam.d_loss(real_out, fake_out, hp, state)  # (K,)
    stack.zero_grad("d")
    loss_d.sum().backward()  # the sum: each point gets exactly its own gradient
    stack.step("d")

    d_params = stack.d_parameters()  # G step through the same fake; D needs no gradient here
    for prm in d_params:
        prm.requires_grad_(False)
    fake_out_g = discriminate(stack.d, x, fake_g, cfg.d_batch)[1]  # joint: beside the real batch again
    loss_g = fam.g_loss(fake_out_g, hp, state)  # (K,)
    stack.zero_grad("g")
    loss_g.sum().backward()
    stack.step("g")
    for prm in d_params:
        prm.requires_grad_(True)
    # BEGAN: M_global of this step, then k_t moves towards the equilibrium
    m_global = state.step(real_out, fake_out_k, hp)["m_global"] if state is not None \
        else torch.zeros(len(stack.runs), device=stack.device)
    return torch.stack([loss_d.detach(), loss_g.detach(), real_out.score.detach().mean(-1),
                        fake_out.score.detach().mean(-1), m_global], dim=1)  # (K, 5)


def epoch_metrics(run: PointRun, sums: torch.Tensor, n_steps: int, k_t: float | None, seconds: float) -> dict:
    """A point's epoch: the means of its STEP_VALUES over the epoch's steps (sums: (5,)), and
    BEGAN's k_t; its train_seconds grow by its share of the stack's time."""
    run.train_seconds += seconds
    run.epoch += 1
    means = dict(zip(STEP_VALUES, (sums / n_steps).tolist()))
    if k_t is None:
        means["m_global"] = math.nan
    return {"epoch": run.epoch, **means, "k_t": math.nan if k_t is None else k_t}


def train_epoch(stack) -> dict[PointRun, dict]:
    """One pass over the training subset for every alive point of the stack; returns each point's
    metrics (unscored). A point that diverged is done, with its reason, and has left the stack."""
    cfg, device, runs = stack.cfg, stack.device, stack.runs
    b, n_steps = cfg.batch_size, cfg.n_train // cfg.batch_size  # the last incomplete batch is dropped
    data = runs[0].data  # (n_train, 1024), shared by the stack
    perms = torch.stack([torch.randperm(cfg.n_train, generator=r.gen, device=device) for r in runs])
    sums = torch.zeros(len(runs), len(STEP_VALUES), device=device)
    bad = torch.zeros(len(runs), dtype=torch.bool, device=device)
    spent = {r: 0.0 for r in runs}  # train seconds: the stack's time, shared by the points in it
    mark = time.perf_counter()

    def close(which: list[int], reason_of: Callable[[int], str]) -> dict[PointRun, dict]:
        nonlocal mark
        now = time.perf_counter()
        for r in stack.runs:
            spent[r] += (now - mark) / len(stack.runs)
        mark = now
        out = {}
        for i in which:
            r = stack.runs[i]
            k_t = stack.state.k[i].item() if stack.state is not None else None
            m = epoch_metrics(r, sums[i], n_steps, k_t, spent[r])
            out[r] = r.mark_diverged(m, reason_of(i)) if reason_of(i) else m
        return out

    out: dict[PointRun, dict] = {}
    for step in range(n_steps):
        x = data[perms[:, step * b:(step + 1) * b]]  # (K, B, 1024)
        step_vals = train_step(stack, x)
        sums += step_vals
        bad |= ~torch.isfinite(step_vals).all(1)
        if (step + 1) % DIVERGENCE_CHECK_EVERY == 0 and bad.any().item():
            # as a point alone stops at this check, the bad points end their epoch here
            out.update(close(bad.nonzero().squeeze(1).tolist(), lambda i: "non-finite loss"))
            alive = ~bad
            stack.keep(alive.tolist())
            if not stack.runs:
                return out
            sums, bad, perms = sums[alive], bad[alive], perms[alive]
    out.update(close(list(range(len(stack.runs))), lambda i: "non-finite loss" if bool(bad[i]) else ""))
    if any(r.done for r in stack.runs):
        stack.keep([not r.done for r in stack.runs])
    return out


def score_epoch(run: PointRun, metrics: dict, scorer: Scorer, samples: torch.Tensor) -> dict:
    """Score a point's epoch on the n_eval samples its G drew from the point's fixed noise, never on
    training batches: (n_eval, 1024) -> the epoch's metrics with I', IS, FID, ...; non-finite
    samples end the point as diverged."""
    t1 = time.perf_counter()
    if not torch.isfinite(samples).all():
        run.eval_seconds += time.perf_counter() - t1
        return run.mark_diverged(metrics, "non-finite samples")
    scores = scorer.score(samples.view(-1, 1, 32, 32), run.score_settings)  # (n_eval, 1, 32, 32)
    kept = to_uint8(samples[:N_KEPT_SAMPLES])
    run.eval_seconds += time.perf_counter() - t1
    return run.record_scores(metrics, scores, kept)


def score_end_again(run: PointRun, scorer: Scorer, n_eval: int) -> dict:
    """A finished point's last epoch scored again on n_eval samples of its fixed noise (the
    first of them the ones it was scored on, `eval_noise`): its last history row and kept
    samples replaced. `gansweep trial` scores the epochs before the last on fewer samples."""
    cfg = run.cfg.replace(n_eval=n_eval)
    t1 = time.perf_counter()
    samples = draw_samples(run.g, eval_noise(cfg, run.device), cfg)  # (n_eval, 1024)
    run.eval_seconds += time.perf_counter() - t1
    last = dict(run.history.pop())
    return score_epoch(run, last, scorer, samples)


def set_tf32(on: bool) -> None:
    """TF32 matmuls and convolutions on CUDA, on or off, for the whole process."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on


def start_stack(cfgs: list[TrialConfig], train_images: torch.Tensor, device: str | torch.device = "cpu",
               resume: list[dict | None] | None = None, pool: NetPool | None = None) -> list[PointRun]:
    """The PointRuns of a stack, built (or restored from `PointRun.checkpoint()` states), their
    nets taken from the pool where it holds their shape (`PointRun.release_nets` fills it).

    train_images: uint8 (N, 28, 28) MNIST training images, or the output of
    `prepare_data` (float (>= n_train, 1024) on `device`), which a process running
    many trials prepares once.
    """
    device = torch.device(device)
    if len({c.tf32 for c in cfgs}) > 1:
        raise ValueError("the points of a stack share the tf32 setting")
    set_tf32(cfgs[0].tf32)  # process-wide: set for every stack, so a reused worker never keeps another run's
    if train_images.dtype == torch.uint8:
        data = prepare_data(train_images, max(c.n_train for c in cfgs), device)  # (n_train, 1024) in [-1, 1]
    else:
        data = train_images
    resume = resume or [None] * len(cfgs)
    return [PointRun(cfg, data, device, r, pool) for cfg, r in zip(cfgs, resume)]


def train_stack(runs: list[PointRun], scorer: Scorer,
               on_epoch: Callable[[dict[int, dict], Callable[[], list[dict]]], None] | None = None) -> None:
    """Train a stack (points of one shape, sweep/plan/packs.py) epoch by epoch, each point as alone.

    on_epoch(reported, make_checkpoint) is called after every epoch in which some point
    scored or diverged: reported maps a point's index to that epoch's metrics, and
    make_checkpoint() returns one `PointRun.checkpoint()` per point, in order, which
    `start_stack(resume=...)` accepts. A diverged point stops; the others go on.
    """
    if all(r.done for r in runs):
        return
    stack = backend_for(runs)

    def checkpoint() -> list[dict]:
        if stack.runs:  # the points that left it had their weights written back as they left
            stack.write_back()
        return [r.checkpoint() for r in runs]

    index = {r: i for i, r in enumerate(runs)}
    while stack.runs:
        epoch = train_epoch(stack)  # points that diverged have left the stack
        scored = [r for r in stack.runs if r.scores_now()]  # all or none: eval_every is shared
        if scored:
            t1 = time.perf_counter()
            samples = stack.samples()  # (K, n_eval, 1024)
            share = (time.perf_counter() - t1) / len(scored)
            for r, s in zip(scored, samples):
                r.eval_seconds += share
                score_epoch(r, epoch[r], scorer, s)
            if any(r.done for r in stack.runs):  # finished, or non-finite samples
                stack.keep([not r.done for r in stack.runs])
        reported = {index[r]: m for r, m in epoch.items() if r.done or r in scored}
        if reported and on_epoch is not None:
            on_epoch(dict(sorted(reported.items())), checkpoint)


def run_stack(cfgs: list[TrialConfig], train_images: torch.Tensor, scorer: Scorer,
             device: str | torch.device = "cpu", *, resume: list[dict | None] | None = None,
             on_epoch=None) -> list[PointRun]:
    """start_stack + train_stack: the stack's PointRuns, trained."""
    runs = start_stack(cfgs, train_images, device, resume)
    train_stack(runs, scorer, on_epoch)
    return runs


def run_trial(cfg: TrialConfig, train_images: torch.Tensor, scorer: Scorer,
              device: str | torch.device = "cpu", *, resume: dict | None = None,
              on_epoch: Callable[[dict, Callable[[], dict]], None] | None = None) -> TrialOutcome:
    """Train one grid point: a stack of one.

    on_epoch(metrics, make_checkpoint) is called after each scored epoch;
    make_checkpoint() returns a dict of tensors and plain values that `resume`
    accepts (torch.save / torch.load(weights_only=True) compatible).
    """
    def one(reported, make_checkpoint):
        on_epoch(reported[0], lambda: make_checkpoint()[0])

    run, = run_stack([cfg], train_images, scorer, device, resume=[resume],
                    on_epoch=one if on_epoch is not None else None)
    return run.outcome()
