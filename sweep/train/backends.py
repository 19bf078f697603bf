"""The two ways a stack's K points run: one contract, so the training step is written once.

    stack = backend_for(runs)          # StackedBackend when the nets can be stacked, else ModuleBackend
    fake = stack.g(z)                  # (K, B, z_dim) -> (K, B, 1024), G in training mode
    out = stack.d(x)                   # (K, N, 1024) -> DOut of (K, N) scores (and (K, N, C) codes)
    stack.zero_grad("d"); loss.sum().backward(); stack.step("d")

sweep/train/loop.py's step reads only this contract. The losses reduce over the batch
axis only, so they return one loss per point, and backpropagating their sum gives each
point exactly its own gradient.

  StackedBackend  the paper's fully-connected nets (models/stacked.py), stacked along K: one
               batched kernel per layer for the whole stack, with Adam and plain SGD
               written for stacked tensors (StackedOptimizer). Before every checkpoint the
               stacked state is written back into the points' own modules and optimizers.
  ModuleBackend   anything else (DCGAN nets, SGD with momentum): each point's own nn.Modules
               and torch.optim optimizers, called one point after another.

Both draw each point's dropout masks from the point's own RNG stream (PointRun.own_rng),
so a point trains alike alone and in a stack of either kind.
"""
from __future__ import annotations

from typing import Literal

import torch

from models.networks import DOut
from models.stacked import PACKABLE, StackedNet
from sweep.train.point import PointRun, draw_samples, eval_chunks, optimizer_step

Net = Literal["g", "d"]


def packable(runs: list[PointRun]) -> bool:
    """Whether these points train stacked: fully-connected nets, no SGD momentum (the stacked
    SGD is plain SGD). A single such point trains stacked too, as a stack of one, so a point
    runs the same kernels on the same slices alone as in a stack (tests/test_packs.py)."""
    alive = [r for r in runs if not r.done]
    return (len(alive) >= 1 and all(isinstance(r.g, PACKABLE) and isinstance(r.d, PACKABLE) for r in alive)
            and all(r.cfg.sgd_momentum == 0 for r in alive))


def backend_for(runs: list[PointRun]) -> "StackedBackend | ModuleBackend":
    """The stack's unfinished points, stacked when they can be."""
    return StackedBackend(runs) if packable(runs) else ModuleBackend(runs)


class _Backend:
    """What both back-ends share: the alive points and BEGAN's k_t of each, stacked (K,)."""

    def __init__(self, runs: list[PointRun]):
        self.runs = [r for r in runs if not r.done]
        self.cfg, self.device = self.runs[0].cfg, self.runs[0].device
        self.fam, self.hp = self.runs[0].fam, self.runs[0].hp
        self.state = None
        if self.runs[0].state is not None:
            self.state = type(self.runs[0].state)(self.device)
            self.state.k = torch.stack([r.state.k for r in self.runs])  # (K,)

    def keep(self, alive: list[bool]) -> None:
        """Only the points marked alive stay (a diverged or finished point leaves its stack). A leaving
        point's nets get its final weights (--keep-weights reads G); not its optimizers: a finished
        point's checkpoint holds neither (sweep/train/point.py), and their write-back was 6% of a
        small stack's CPU."""
        self.write_back_nets([i for i, a in enumerate(alive) if not a])
        idx = torch.tensor([i for i, a in enumerate(alive) if a], dtype=torch.long, device=self.device)
        self.runs = [r for r, a in zip(self.runs, alive) if a]
        if self.state is not None:
            self.state.k = self.state.k[idx]
        if self.runs:
            self._keep(idx)

    def write_back(self) -> None:
        """Each point's state into its own modules, optimizers and k_t (for its checkpoint)."""
        if self.state is not None:
            for r, k in zip(self.runs, self.state.k):
                r.state.k = k.clone()

    def write_back_nets(self, which: list[int]) -> None:
        """These points' k_t into their own state; their weights too where the back-end holds them
        apart from the points' modules (StackedBackend)."""
        if self.state is not None:
            for i in which:
                self.runs[i].state.k = self.state.k[i].clone()

    def _keep(self, idx: torch.Tensor) -> None:
        pass


class StackedBackend(_Backend):
    """The stack's alive points as one stacked model (models/stacked.py)."""

    def __init__(self, runs: list[PointRun]):
        super().__init__(runs)
        cfg = self.cfg
        self.g_net = StackedNet([r.g for r in self.runs])
        self.d_net = StackedNet([r.d for r in self.runs], draw_masks=self._masks)
        betas = (cfg.adam_beta1, cfg.adam_beta2)
        self.opt = {
            "g": StackedOptimizer(self.g_net, [r.opt_g for r in self.runs], [r.cfg.optimG for r in self.runs],
                                  [r.cfg.lr for r in self.runs], betas),
            "d": StackedOptimizer(self.d_net, [r.opt_d for r in self.runs], [r.cfg.optimD for r in self.runs],
                                  [r.cfg.lr for r in self.runs], betas)}

    def g(self, z: torch.Tensor) -> torch.Tensor:
        return self.g_net(z, training=True)  # (K, B, 1024)

    def d(self, x: torch.Tensor) -> DOut:
        return self.d_net(x, training=True)  # (K, N) scores

    def d_parameters(self) -> list[torch.Tensor]:
        return self.d_net.parameters()

    def zero_grad(self, net: Net) -> None:
        self.opt[net].zero_grad()

    def step(self, net: Net) -> None:
        self.opt[net].step()

    def _masks(self, shape: tuple, p: float) -> torch.Tensor:
        """(K, *shape) dropout noise, 0 or 1/(1-p), each point's from its own RNG (as F.dropout on CPU)."""
        out = []
        for r in self.runs:
            with r.own_rng():
                out.append(torch.empty(shape, device=self.device).bernoulli_(1 - p).div_(1 - p))
        return torch.stack(out)

    def write_back(self) -> None:
        super().write_back()
        self.g_net.write_back()
        self.d_net.write_back()
        self.opt["g"].write_back()
        self.opt["d"].write_back()

    def write_back_nets(self, which: list[int]) -> None:
        super().write_back_nets(which)
        self.g_net.write_back(which)
        self.d_net.write_back(which)

    def _keep(self, idx: torch.Tensor) -> None:
        for part in (self.g_net, self.d_net, self.opt["g"], self.opt["d"]):
            part.keep(idx)

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """(K, n_eval, 1024): every alive point's samples from its fixed noise, BN as `sample_bn` says."""
        z = torch.stack([r.eval_z for r in self.runs])  # (K, n_eval, z)
        batch_stats = self.cfg.sample_bn == "train"
        return torch.cat([self.g_net(z[:, a:b], training=False, batch_stats=batch_stats)
                          for a, b in eval_chunks(self.cfg)], dim=1)


class ModuleBackend(_Backend):
    """The stack's alive points as their own modules and torch.optim optimizers, one after another."""

    def __init__(self, runs: list[PointRun]):
        super().__init__(runs)
        for r in self.runs:
            r.g.train(), r.d.train()

    def g(self, z: torch.Tensor) -> torch.Tensor:
        out = []
        for r, zk in zip(self.runs, z):
            with r.own_rng():
                out.append(r.g(zk))  # (B, 1024)
        return torch.stack(out)

    def d(self, x: torch.Tensor) -> DOut:
        outs = []
        for r, xk in zip(self.runs, x):
            with r.own_rng():  # dropout masks from the point's own stream
                outs.append(r.d(xk))
        codes = [o.code for o in outs]
        return DOut(torch.stack([o.score for o in outs]), None if codes[0] is None else torch.stack(codes))

    def d_parameters(self) -> list[torch.Tensor]:
        return [p for r in self.runs for p in r.d.parameters()]

    def zero_grad(self, net: Net) -> None:
        for r in self.runs:
            getattr(r, f"opt_{net}").zero_grad(set_to_none=True)

    def step(self, net: Net) -> None:
        for r in self.runs:
            optimizer_step(getattr(r, f"opt_{net}"))

    def samples(self) -> torch.Tensor:
        """(K, n_eval, 1024), each point's drawn by its own G (sweep/train/point.py draw_samples)."""
        out = torch.stack([draw_samples(r.g, r.eval_z, r.cfg) for r in self.runs])
        for r in self.runs:
            r.g.train()
        return out


class StackedOptimizer:
    """Adam or plain SGD per point, over stacked (K, ...) parameters.

    State is read from, and written back to, each point's own torch.optim optimizer,
    with torch.optim.Adam's single-tensor update:
        m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, net: StackedNet, solo: list[torch.optim.Optimizer], kinds: list[str], lrs: list[float],
                 betas: tuple):
        params = net.parameters()
        solo_params = [net.solo_parameters(k) for k in range(len(solo))]
        self.net, self.params, self.solo, self.solo_params = net, params, solo, solo_params
        dev = params[0].device
        self.adam = torch.tensor([k == "adam" for k in kinds], device=dev)  # (K,)
        self.lr = torch.tensor(lrs, device=dev, dtype=params[0].dtype)  # (K,)
        self.b1, self.b2 = betas
        self.eps = 1e-8
        self.step_n = torch.zeros(len(kinds), device=dev)
        self.m = [torch.zeros_like(p.detach()) for p in params]
        self.v = [torch.zeros_like(p.detach()) for p in params]
        for i, opt in enumerate(solo):  # a resumed point brings its Adam state
            for j, p in enumerate(solo_params[i]):
                st = opt.state.get(p, {})
                if "exp_avg" in st:
                    self.m[j][i].copy_(net.solo_layout(j, st["exp_avg"]))
                    self.v[j][i].copy_(net.solo_layout(j, st["exp_avg_sq"]))
                    self.step_n[i] = float(st["step"])

    def _view(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.view(-1, *([1] * (like.dim() - 1)))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        any_adam, any_sgd = bool(self.adam.any()), not bool(self.adam.all())
        if any_adam:
            self.step_n += self.adam.to(self.step_n.dtype)
            bc1 = 1 - self.b1 ** self.step_n.clamp(min=1)  # (K,); an SGD point's is unused
            bc2_sqrt = (1 - self.b2 ** self.step_n.clamp(min=1)).sqrt()
        for j, p in enumerate(self.params):
            g = p.grad
            if any_adam:
                self.m[j].lerp_(g, 1 - self.b1)
                self.v[j].mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
                # denom / step size, so one addcdiv_ applies each point's own step size
                denom = self.v[j].sqrt().div_(self._view(bc2_sqrt, p)).add_(self.eps)
                denom.div_(self._view(self.lr / bc1, p))
                if any_sgd:  # a mixed stack: the SGD points take -lr g instead
                    p.sub_(torch.where(self._view(self.adam, p), self.m[j] / denom, g * self._view(self.lr, p)))
                else:
                    p.addcdiv_(self.m[j], denom, value=-1.0)
            else:
                p.sub_(g * self._view(self.lr, p))

    def write_back(self) -> None:
        """Each Adam point's moments and step into its own torch optimizer."""
        for i, opt in enumerate(self.solo):
            if not bool(self.adam[i]):
                continue
            for j, p in enumerate(self.solo_params[i]):
                opt.state[p] = {"step": torch.tensor(float(self.step_n[i])),
                                "exp_avg": self.net.solo_layout(j, self.m[j][i]).clone(),
                                "exp_avg_sq": self.net.solo_layout(j, self.v[j][i]).clone()}

    def keep(self, idx: torch.Tensor) -> None:
        keep = idx.tolist()
        self.params = self.net.parameters()
        self.solo = [self.solo[i] for i in keep]
        self.solo_params = [self.solo_params[i] for i in keep]
        self.adam, self.lr, self.step_n = self.adam[idx], self.lr[idx], self.step_n[idx]
        self.m = [m[idx].clone() for m in self.m]
        self.v = [v[idx].clone() for v in self.v]
