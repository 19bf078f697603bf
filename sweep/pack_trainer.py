"""Train a pack of same-shape fully-connected points as one stacked model (models/packed.py).

    runs = start_pack(cfgs, images)          # sweep/trial.py: K PointRuns, each initialised as alone
    train_pack(runs, scorer, on_epoch)       # stacks them here when they can be (packable)

The step is the solo step of sweep/trial.py with a leading pack axis K on every
tensor: one batched kernel per layer for the whole pack instead of K. Each point
keeps its own RNG streams (data order, noise, dropout masks: drawn exactly as it
would draw them alone), optimizer type and lr, batch-norm statistics, BEGAN k_t,
divergence and metrics. The losses (models/losses.py) reduce over the batch axis
only, so they return one loss per point; the pack backpropagates their sum, which
gives each point exactly its own gradient.

The optimizers are Adam and plain SGD written for stacked tensors, with each
point's lr and type (torch.optim's single-tensor formulas). A diverged point
leaves the pack at the check that finds it, as a solo trial stops there. Before
every checkpoint the stacked state is written back into the points' own modules
and optimizers, so checkpoints are the points' own and a pack resumes exactly.

A packed point matches the same point trained alone up to float rounding: batched
matmuls and the stacked optimizer round differently from their one-point kernels,
and GAN training amplifies such differences over steps (tests/test_packs.py
states the tolerance).
"""
from __future__ import annotations

import time

import torch

from models.networks import discriminate
from models.packed import PACKABLE, PackedNet
from sweep.trial import DIVERGENCE_CHECK_EVERY, PointRun, eval_chunks, sample_noise


def packable(runs: list[PointRun]) -> bool:
    """Whether these points train stacked: fully-connected nets, no SGD momentum (the stacked
    SGD is plain SGD). A single such point trains stacked too, as a pack of one, so a point
    runs the same kernels on the same slices alone as in a pack (tests/test_packs.py)."""
    alive = [r for r in runs if not r.done]
    return (len(alive) >= 1 and all(isinstance(r.g, PACKABLE) and isinstance(r.d, PACKABLE) for r in alive)
            and all(r.cfg.sgd_momentum == 0 for r in alive))


class StackedOptimizer:
    """Adam or plain SGD per point, over stacked (K, ...) parameters.

    State is read from, and written back to, each point's own torch.optim optimizer,
    with torch.optim.Adam's single-tensor update:
        m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, net: PackedNet, solo: list[torch.optim.Optimizer], kinds: list[str], lrs: list[float],
                 betas: tuple):
        params = net.parameters()
        solo_params = [net.solo_parameters(k) for k in range(len(solo))]
        self.net, self.params, self.solo, self.solo_params = net, params, solo, solo_params
        dev = params[0].device
        self.adam = torch.tensor([k == "adam" for k in kinds], device=dev)  # (K,)
        self.lr = torch.tensor(lrs, device=dev, dtype=params[0].dtype)  # (K,)
        self.b1, self.b2 = betas
        self.eps = 1e-8
        k = len(kinds)
        self.step_n = torch.zeros(k, device=dev)
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
                if any_sgd:  # a mixed pack: the SGD points take -lr g instead
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


class PackedTrainer:
    """The pack's alive points, stacked; `train_epoch` is sweep/trial.py's epoch for all of them."""

    def __init__(self, runs: list[PointRun]):
        self.runs = [r for r in runs if not r.done]
        cfg = self.runs[0].cfg
        self.cfg, self.device = cfg, self.runs[0].device
        self.fam, self.hp = self.runs[0].fam, self.runs[0].hp
        self.g = PackedNet([r.g for r in self.runs])
        self.d = PackedNet([r.d for r in self.runs], draw_masks=self._masks)
        betas = (cfg.adam_beta1, cfg.adam_beta2)
        self.opt_g = StackedOptimizer(self.g, [r.opt_g for r in self.runs], [r.cfg.optimG for r in self.runs],
                                      [r.cfg.lr for r in self.runs], betas)
        self.opt_d = StackedOptimizer(self.d, [r.opt_d for r in self.runs], [r.cfg.optimD for r in self.runs],
                                      [r.cfg.lr for r in self.runs], betas)
        self.state = None
        if self.runs[0].state is not None:  # BEGAN: every point's k_t, stacked (K,)
            self.state = type(self.runs[0].state)(self.device)
            self.state.k = torch.stack([r.state.k for r in self.runs])

    def _masks(self, shape: tuple, p: float) -> torch.Tensor:
        """(K, *shape) dropout noise, 0 or 1/(1-p), each point's from its own RNG (as F.dropout on CPU)."""
        out = []
        for r in self.runs:
            with r.own_rng():
                out.append(torch.empty(shape, device=self.device).bernoulli_(1 - p).div_(1 - p))
        return torch.stack(out)

    def write_back(self) -> None:
        """The stacked state into each point's own modules and optimizers (for its checkpoint)."""
        self.g.write_back()
        self.d.write_back()
        self.opt_g.write_back()
        self.opt_d.write_back()
        if self.state is not None:
            for r, k in zip(self.runs, self.state.k):
                r.state.k = k.clone()

    def _keep(self, alive: torch.Tensor) -> None:
        idx = alive.nonzero().squeeze(1)
        self.runs = [self.runs[i] for i in idx.tolist()]
        if not self.runs:
            return
        self.g.keep(idx)
        self.d.keep(idx)
        self.opt_g.keep(idx)
        self.opt_d.keep(idx)
        if self.state is not None:
            self.state.k = self.state.k[idx]

    def train_epoch(self) -> dict[PointRun, dict]:
        """One epoch of every alive point; returns each point's metrics (unscored; a point that
        diverged is done, with its reason, and has left the pack)."""
        cfg, device, fam, hp = self.cfg, self.device, self.fam, self.hp
        n_steps = cfg.n_train // cfg.batch_size
        data = self.runs[0].data  # (n_train, 1024), shared by the pack
        perms = torch.stack([torch.randperm(cfg.n_train, generator=r.gen, device=device) for r in self.runs])
        sums = torch.zeros(len(self.runs), 5, device=device)  # per point: loss_d, loss_g, D(x), D(G(z)), M_global
        bad = torch.zeros(len(self.runs), dtype=torch.bool, device=device)
        out: dict[PointRun, dict] = {}
        spent = {r: 0.0 for r in self.runs}  # train seconds: the pack's time, shared by the points in it
        mark = time.perf_counter()

        def charge() -> None:
            nonlocal mark
            now = time.perf_counter()
            for r in self.runs:
                spent[r] += (now - mark) / len(self.runs)
            mark = now

        def d(images: torch.Tensor):  # the stacked D in training mode: (K, N, 1024) -> DOut of (K, N)
            return self.d(images, training=True)

        for step in range(n_steps):
            x = data[perms[:, step * cfg.batch_size:(step + 1) * cfg.batch_size]]  # (K, B, 1024)
            z = torch.stack([sample_noise(r.cfg, cfg.batch_size, r.gen, device) for r in self.runs])  # (K, B, z)
            fake = self.g(z, training=True)  # (K, B, 1024)
            fake_g = fake
            if fam.separate_z:  # z_G, drawn after z_D from each point's stream, as alone
                z_g = torch.stack([sample_noise(r.cfg, cfg.batch_size, r.gen, device) for r in self.runs])
                fake_g = self.g(z_g, training=True)  # (K, B, 1024)

            real_out, fake_out = discriminate(d, x, fake.detach(), cfg.d_batch)  # (K, B) scores each
            if self.state is not None:  # BEGAN: k_t reads L(G(z_G)) from the D that L(x) came from
                with torch.no_grad():
                    fake_out_k = discriminate(d, x, fake_g.detach(), cfg.d_batch)[1]
            loss_d = fam.d_loss(real_out, fake_out, hp, self.state)  # (K,)
            self.opt_d.zero_grad()
            loss_d.sum().backward()  # the sum: each point gets exactly its own gradient
            self.opt_d.step()

            d_params = self.d.parameters()
            for prm in d_params:
                prm.requires_grad_(False)
            fake_out_g = discriminate(d, x, fake_g, cfg.d_batch)[1]  # joint: beside the real batch again
            loss_g = fam.g_loss(fake_out_g, hp, self.state)  # (K,)
            self.opt_g.zero_grad()
            loss_g.sum().backward()
            self.opt_g.step()
            for prm in d_params:
                prm.requires_grad_(True)
            m_global = self.state.step(real_out, fake_out_k, hp)["m_global"] if self.state is not None \
                else torch.zeros(len(self.runs), device=device)

            step_vals = torch.stack([loss_d.detach(), loss_g.detach(), real_out.score.detach().mean(-1),
                                     fake_out.score.detach().mean(-1), m_global], dim=1)  # (K, 5)
            sums += step_vals
            bad |= ~torch.isfinite(step_vals).all(1)
            if (step + 1) % DIVERGENCE_CHECK_EVERY == 0 and bad.any().item():
                # as a solo trial stops at this check, the bad points end their epoch here
                charge()
                for i in bad.nonzero().squeeze(1).tolist():
                    r = self.runs[i]
                    out[r] = r.mark_diverged(self._metrics(r, sums[i], n_steps, i, spent[r]), "non-finite loss")
                alive = ~bad
                self.drop_done()
                if not self.runs:
                    return out
                sums, bad, perms = sums[alive], bad[alive], perms[alive]
        charge()
        for i, r in enumerate(self.runs):
            metrics = self._metrics(r, sums[i], n_steps, i, spent[r])
            out[r] = r.mark_diverged(metrics, "non-finite loss") if bool(bad[i]) else metrics
        self.drop_done()
        return out

    def drop_done(self) -> None:
        """Points that are done (finished, or diverged) leave the pack."""
        done = [r.done for r in self.runs]
        if any(done):
            self.write_back()  # a finished point's modules hold its final state (--keep-weights reads G)
            self._keep(torch.tensor([not d for d in done], device=self.device))

    def _metrics(self, r: PointRun, sums: torch.Tensor, n_steps: int, i: int, seconds: float) -> dict:
        r.train_seconds += seconds  # the pack's time, shared evenly by its points
        r.epoch += 1
        means = (sums / n_steps).tolist()
        has_k = self.state is not None
        return {"epoch": r.epoch, "loss_d": means[0], "loss_g": means[1], "d_real": means[2], "d_fake": means[3],
                "m_global": means[4] if has_k else float("nan"),
                "k_t": self.state.k[i].item() if has_k else float("nan")}

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """(K, n_eval, 1024): every alive point's samples from its fixed noise, BN as `sample_bn` says."""
        z = torch.stack([r.eval_z for r in self.runs])  # (K, n_eval, z)
        batch_stats = self.cfg.sample_bn == "train"
        return torch.cat([self.g(z[:, a:b], training=False, batch_stats=batch_stats)
                          for a, b in eval_chunks(self.cfg)], dim=1)
