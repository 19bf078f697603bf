"""One grid point's state: its nets, optimizers, RNG streams, scores and checkpoints.

    run = PointRun(cfg, data, device)          # built (or restored from run.checkpoint())
    with run.own_rng(): ...                    # torch's global RNG is the point's own stream

What a point *is*, not how it trains: sweep/train/loop.py trains points, always as a pack
(a lone point is a pack of one), through a back-end (sweep/train/backends.py). Every
random draw of a point comes from its own streams, so it trains identically alone or in
a pack, and its checkpoint restores them for a bit-identical resume. Also here: building
a config's nets and optimizers, its noise, and how its samples are drawn for scoring.
"""
from __future__ import annotations

import math
import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from models.archs import get_arch
from models.losses import LossParams, get_family
from models.metric_names import SCORE_KEYS
from models.metrics import ScoreSettings
from models.networks import Redrawable
from sweep.plan.config import TrialConfig
from sweep.train.data import to_model_space
from sweep.record.schema import DIVERGED, OK

N_KEPT_SAMPLES = 64  # samples kept per evaluation for sample grids (Figure 4)


POOL_MAX_PARAMS = 1 << 22  # what a worker's NetPool keeps idle at most: 4M parameters (16 MB in float32)


class NetPool:
    """The nets of a worker's finished points, kept for its next points of the same class and
    arguments (G and D apart: 16 G shapes serve the paper's 7,168 points).

    A reused net is redrawn (models/networks.py Redrawable): equal, bit for bit, to one built
    anew from the same RNG stream (tests/test_trial.py), in a fraction of the time for the
    small nets where building is mostly Python. Nets of other classes (plugins, DCGAN) are
    built every time. At most POOL_MAX_PARAMS parameters wait idle; the oldest go first."""

    def __init__(self, max_params: int = POOL_MAX_PARAMS):
        self.max_params = max_params
        self.idle: dict[tuple, list[Redrawable]] = {}  # key -> idle nets, keys oldest first
        self.key_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # net -> (key, parameters)
        self.idle_params = 0
        self.hits = self.misses = 0

    def net(self, cls: type, device: torch.device, *args, **kwargs) -> torch.nn.Module:
        """cls(*args, **kwargs) on device: an idle one redrawn, else built."""
        key = (cls, args, tuple(sorted(kwargs.items())), str(device))
        nets = self.idle.get(key)
        if nets:
            net = self._take(key)
            net.redraw()
            self.hits += 1
            return net
        net = _on(cls(*args, **kwargs), device)
        self.misses += 1
        if issubclass(cls, Redrawable):
            self.key_of[net] = (key, sum(p.numel() for p in net.parameters()))
        return net

    def put(self, net: torch.nn.Module) -> None:
        """Take back a net its point no longer uses (nothing may train or write into it again)."""
        if net not in self.key_of or self.key_of[net][1] > self.max_params:
            return
        key, size = self.key_of[net]
        self.idle.setdefault(key, []).append(net)
        self.idle_params += size
        while self.idle_params > self.max_params:
            self._take(next(iter(self.idle)))  # the longest-unused shape's nets go first

    def _take(self, key: tuple) -> Redrawable:
        nets = self.idle[key]
        net = nets.pop()
        if not nets:
            del self.idle[key]
        self.idle_params -= self.key_of[net][1]
        return net


def _on(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if torch.device(device).type == "cpu":  # built there: .to() would only walk every module (4% of a tiny trial's CPU)
        return net
    return net.to(device)


def build_models(cfg: TrialConfig, device: torch.device, pool: NetPool | None = None):
    """The family's losses, and G and D of the config's arch (models/archs.py): every arch takes
    and returns flattened (N, 1024) images, so nothing below depends on the arch. With a pool,
    idle nets of the same shape are redrawn rather than built (the same values)."""
    fam = get_family(cfg.family)
    if pool is not None:
        g, d = get_arch(cfg.arch).nets(cfg, fam.discriminator, lambda cls, *a, **kw: pool.net(cls, device, *a, **kw))
    else:
        g, d = get_arch(cfg.arch).nets(cfg, fam.discriminator, lambda cls, *a, **kw: _on(cls(*a, **kw), device))
    return fam, g, d


def _optimizers_without_dynamo() -> None:
    """Optimizer methods that run eagerly, without importing torch._dynamo first.

    torch wraps Optimizer.add_param_group, zero_grad, state_dict and load_state_dict in
    torch._compile._disable_dynamo, whose first call imports torch._dynamo (1.8 s of CPU)
    only to keep them out of torch.compile's tracing: every Ray worker paid it for its
    first optimizer. Nothing in gansweep compiles; the wrapper caches what it would call
    in fn.__dynamo_disable, set here to fn itself (in eager mode dynamo's disable is a
    pass-through, so values are the same). Left alone once torch._dynamo is loaded (by
    torch.compile or a plugin). Their step goes through `optimizer_step`, for the same reason."""
    import sys

    if "torch._dynamo" in sys.modules:
        return
    inner = torch._compile._disable_dynamo(lambda: None).__code__
    for fn in vars(torch.optim.Optimizer).values():
        if getattr(fn, "__code__", None) is inner and hasattr(fn, "__wrapped__"):
            fn.__wrapped__.__dynamo_disable = fn.__wrapped__


def optimizer_step(opt: torch.optim.Optimizer) -> None:
    """opt.step() without importing torch._dynamo: what the module back-end calls for each point.

    torch.optim's step is wrapped twice: in the profiler's hooks (Optimizer.profile_hook_step:
    step hooks, of which gansweep registers none, and the LR scheduler's call-order check, which
    has no scheduler here), then in _use_grad_for_differentiable, which imports torch._dynamo at
    every call only to mark a graph break for torch.compile (a no-op in eager mode) and runs the
    update with grad off. The first step of every Ray worker training a dcgan point paid 1.8 s of
    CPU for that import (py-spy: 12% of a test session's worker). This runs the update itself,
    with grad off: the same values (tests/test_trial.py)."""
    step = type(opt).step
    while hasattr(step, "__wrapped__"):  # the profiler's wrapper, then _use_grad's
        step = step.__wrapped__
    with torch.no_grad():
        step(opt)


def make_optimizer(name: str, params, cfg: TrialConfig) -> torch.optim.Optimizer:
    _optimizers_without_dynamo()
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
    status: str  # OK or DIVERGED (sweep/record/schema.py)
    history: list[dict]  # one dict of metrics per scored epoch
    samples: torch.Tensor | None  # (64, 32, 32) uint8 from the last scored epoch
    train_seconds: float
    eval_seconds: float
    reason: str = ""  # why a trial diverged


def prepare_data(train_images_u8: torch.Tensor, n_train: int, device) -> torch.Tensor:
    """uint8 (N, 28, 28) MNIST -> the first n_train images as (n_train, 1024) floats on device."""
    return to_model_space(train_images_u8[:n_train], device).flatten(1)


WEIGHT_KEYS = ("G", "D", "opt_G", "opt_D")  # what a finished point's checkpoint may drop


def global_streams(device: torch.device) -> list[torch.Tensor]:
    """torch's global RNG state(s) now: the CPU's, and the device's on CUDA."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def set_global_streams(states: list[torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)


def seeded_streams(seed: int, device: torch.device) -> list[torch.Tensor]:
    """torch's global RNG state(s) (the CPU's, and the device's on CUDA) as torch.manual_seed(seed)
    leaves them (tests/test_trial.py; on CUDA, the device check's equivalence step).

    Read from fresh generators seeded alike: torch.manual_seed also seeds every CUDA device
    lazily, and on a process without CUDA initialised each call recorded a Python traceback
    for its queued call (6% of a small trial's CPU)."""
    states = [torch.Generator().manual_seed(seed).get_state()]
    if device.type == "cuda":
        states.append(torch.Generator(device=device).manual_seed(seed).get_state())
    return states


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

    def __init__(self, cfg: TrialConfig, data: torch.Tensor, device: torch.device, resume: dict | None = None,
                 pool: NetPool | None = None):
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
            self.fam, self.g, self.d = build_models(cfg, device, pool)
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
        return seeded_streams(self.cfg.seed, self.device)

    @contextmanager
    def own_rng(self):
        """torch's global RNG is this point's private stream inside the block."""
        outer = global_streams(self.device)
        set_global_streams(self._rng, self.device)
        try:
            yield
        finally:
            self._rng = global_streams(self.device)
            set_global_streams(outer, self.device)

    def scores_now(self) -> bool:
        return not self.done and (self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs)

    def record_scores(self, metrics: dict, scores: dict, samples_u8: torch.Tensor) -> dict:
        """An epoch scored: its metrics with the scores join the history, its first samples are
        kept (N_KEPT_SAMPLES), and the point is done when it was the last epoch."""
        metrics.update(scores)
        self.samples = samples_u8
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
        A finished point's holds no weights (WEIGHT_KEYS) nor RNG streams: it never trains again
        (sweep/runner/worker.py may keep its G's weights)."""
        out = {"epoch": self.epoch, "history": self.history, "train_seconds": self.train_seconds,
               "eval_seconds": self.eval_seconds, "samples": self.samples, "config": self.cfg.as_dict()}
        if self.done or not hasattr(self, "g"):  # finished (or restored finished, never built)
            return out
        out.update(rng=self.gen.get_state(), torch_rng=self._rng,
                   k=self.state.k if self.state is not None else None,
                   G=self.g.state_dict(), D=self.d.state_dict(), opt_G=self.opt_g.state_dict(),
                   opt_D=self.opt_d.state_dict())
        return out

    def release_nets(self, pool: NetPool) -> None:
        """A finished point's nets go back to the pool (its checkpoint holds no weights, and any
        state_dict taken earlier keeps its own tensors: models/networks.py Redrawable)."""
        if not self.done or not hasattr(self, "g"):
            return
        pool.put(self.g)
        pool.put(self.d)
        del self.g, self.d, self.opt_g, self.opt_d

    def generator_weights(self) -> dict | None:
        return self.g.state_dict() if hasattr(self, "g") else None

    def outcome(self) -> TrialOutcome:
        return TrialOutcome(self.status or OK, self.history, self.samples, self.train_seconds,
                            self.eval_seconds, self.reason)
