"""K same-shape fully-connected networks as one stacked network: batched matmuls, one kernel per layer.

    from models.stacked import StackedNet
    g = StackedNet([point.g for point in pack])     # K Generators of models/networks.py
    fake = g(z)                                     # (K, B, z_dim) -> (K, B, 1024)

Every tensor of the K solo networks (weights, biases, batch-norm weights and
running statistics) is stacked along a new leading axis K, in the solo layout, so
`write_back` copies slice k into network k exactly: a pack's checkpoint is its
points' own. Each layer is one batched kernel for the whole pack:

    Linear       torch.baddbmm(bias (K, 1, out), x (K, B, in), W^T (K, in, out))
    BatchNorm1d  statistics over B, per point and feature; running stats (K, C)
    Dropout      masks drawn from each point's own RNG stream (the caller's draw_masks),
                 so a point's masks are the ones it would draw alone
    ReLU, tanh   elementwise

Only the paper's fully-connected nets (models/networks.py) are packed this way;
the DCGAN nets of a pack run one after another (sweep/train/backends.py ModuleBackend).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.networks import AutoEncoderDiscriminator, DOut, Generator, MLPDiscriminator, reconstruction_energy

PACKABLE = (Generator, MLPDiscriminator, AutoEncoderDiscriminator)


def _layers(net: nn.Module) -> list[nn.Module]:
    """The solo net's layers in forward order (without the final activation or energy)."""
    if isinstance(net, Generator):
        return [*net.body, net.out]
    if isinstance(net, MLPDiscriminator):
        return [*net.body, net.out]
    if isinstance(net, AutoEncoderDiscriminator):
        return [*net.encoder, net.decoder]
    raise TypeError(f"{type(net).__name__} cannot be packed (only {', '.join(c.__name__ for c in PACKABLE)})")


class StackedNet:
    """K solo networks of one class and shape, stacked (module docstring)."""

    def __init__(self, nets: list[nn.Module], draw_masks: Callable[[tuple, float], torch.Tensor] | None = None):
        kinds = {type(n) for n in nets}
        if len(kinds) != 1:
            raise TypeError(f"a pack holds one network class, got {sorted(k.__name__ for k in kinds)}")
        self.nets, self.kind, self.draw_masks = nets, type(nets[0]), draw_masks
        self.energy_norm = getattr(nets[0], "energy_norm", None)
        per_net = [_layers(n) for n in nets]
        # (stacked tensor, the K solo tensors it came from, is a buffer, stored transposed)
        self._pairs: list[tuple[torch.Tensor, list[torch.Tensor], bool, bool]] = []
        self.layers: list[tuple[str, dict]] = []
        for layer_k in zip(*per_net):
            first = layer_k[0]
            if isinstance(first, nn.Linear):
                # weights stacked as (K, in, out), the solo (out, in) transposed: the batched
                # matmul and its weight gradient then need no layout copies
                self.layers.append(("linear", {"w": self._stack(layer_k, "weight", transposed=first.out_features > 1),
                                               "b": self._stack(layer_k, "bias")}))
            elif isinstance(first, nn.BatchNorm1d):
                self.layers.append(("bn", {"w": self._stack(layer_k, "weight"), "b": self._stack(layer_k, "bias"),
                                           "mean": self._stack(layer_k, "running_mean", buffer=True),
                                           "var": self._stack(layer_k, "running_var", buffer=True),
                                           "n": self._stack(layer_k, "num_batches_tracked", buffer=True),
                                           "eps": first.eps, "momentum": first.momentum}))
            elif isinstance(first, nn.ReLU):
                self.layers.append(("relu", {}))
            elif isinstance(first, nn.Dropout):
                self.layers.append(("dropout", {"p": first.p}))
            else:
                raise TypeError(f"cannot pack a {type(first).__name__} layer")

    # the stacked tensors and, for write_back, the solo tensors each one came from
    def _stack(self, layer_k, name: str, buffer: bool = False, transposed: bool = False) -> torch.Tensor:
        solo = [getattr(m, name) for m in layer_k]
        stacked = torch.stack([t.detach().t() if transposed else t.detach() for t in solo])  # (K, *solo shape)
        if not buffer:
            stacked.requires_grad_(True)
        self._pairs.append((stacked, solo, buffer, transposed))
        return stacked

    def solo_layout(self, j: int, t: torch.Tensor) -> torch.Tensor:
        """A slice of parameter j's stacked layout (or of its optimizer state) in the solo layout."""
        return t.t() if [p for p in self._pairs if not p[2]][j][3] else t

    def parameters(self) -> list[torch.Tensor]:
        return [t for t, _, buffer, _ in self._pairs if not buffer]

    def solo_parameters(self, k: int) -> list[torch.Tensor]:
        """Network k's parameters, in the order of parameters()."""
        return [solo[k] for _, solo, buffer, _ in self._pairs if not buffer]

    def write_back(self, which: list[int] | None = None) -> None:
        """Copy each slice (of the networks in `which`, default all) into its solo network (weights,
        BN statistics), exactly."""
        with torch.no_grad():
            for stacked, solo, _, transposed in self._pairs:
                for k in range(len(solo)) if which is None else which:
                    solo[k].copy_(stacked[k].t() if transposed else stacked[k])

    def keep(self, idx: torch.Tensor) -> None:
        """Drop the points not in idx (a diverged point leaves its pack)."""
        keep = idx.tolist()
        self.nets = [self.nets[i] for i in keep]
        remap = {}
        pairs = []
        for stacked, solo, buffer, transposed in self._pairs:
            new = stacked.detach()[idx].clone()
            if not buffer:
                new.requires_grad_(True)
            remap[id(stacked)] = new
            pairs.append((new, [solo[i] for i in keep], buffer, transposed))
        self._pairs = pairs
        for _, t in self.layers:
            for key, v in list(t.items()):
                if isinstance(v, torch.Tensor):
                    t[key] = remap[id(v)]

    # ---------------------------------------------------------------- forward
    def __call__(self, x: torch.Tensor, training: bool, batch_stats: bool = False) -> torch.Tensor | DOut:
        """training: batch norm on batch statistics (updating the running ones) and dropout on;
        batch_stats without training: batch statistics, nothing updated, no dropout."""
        inp, code = x, None
        for kind, t in self.layers:
            if kind == "linear" and t["b"].shape[1] == 1:
                # a GAN's logit layer, weights (K, 1, in): a matrix-vector product, which bmm
                # computes by another path for one point than for several; a product and a
                # sum give each point the same arithmetic whatever K is
                x = (x * t["w"]).sum(-1, keepdim=True) + t["b"].unsqueeze(1)  # (K, B, 1)
            elif kind == "linear":
                x = torch.baddbmm(t["b"].unsqueeze(1), x, t["w"])  # (K, B, in) @ (K, in, out) -> (K, B, out)
            elif kind == "bn":
                x = _batch_norm(x, t, training, batch_stats)
            elif kind == "relu":
                x = torch.relu(x)
            elif kind == "dropout" and training and t["p"] > 0:
                # (K, B, C) of 0 or 1/(1-p): each point's own masks, as F.dropout draws them
                x = x * self.draw_masks(tuple(x.shape[1:]), t["p"])
            if kind == "relu" or kind == "dropout":
                code = x
        if self.kind is Generator:
            return torch.tanh(x)  # (K, B, 1024)
        if self.kind is MLPDiscriminator:
            return DOut(x.squeeze(-1), None)  # (K, B) logits
        return DOut(reconstruction_energy(x, inp, self.energy_norm), code)  # (K, B) energies, (K, B, sizeD)


def _batch_norm(x: torch.Tensor, t: dict, training: bool, batch_stats: bool = False) -> torch.Tensor:
    """BatchNorm1d over the batch axis of each point: x (K, B, C).

    Laid out as (B, K*C), one F.batch_norm call is K*C independent channels: each point's
    features keep their own statistics, and the stacked running statistics (K, C) are
    updated in place through their (K*C,) views, by the same kernel as a solo BatchNorm1d.
    """
    k, b, c = x.shape
    flat = x.transpose(0, 1).reshape(b, k * c)  # (B, K*C)
    if batch_stats and not training:  # as a solo BN in training mode without tracking: nothing updated
        y = F.batch_norm(flat, None, None, t["w"].reshape(k * c), t["b"].reshape(k * c), True, 0.0, t["eps"])
        return y.view(b, k, c).transpose(0, 1)
    y = F.batch_norm(flat, t["mean"].view(k * c), t["var"].view(k * c), t["w"].reshape(k * c),
                     t["b"].reshape(k * c), training, t["momentum"], t["eps"])
    if training:
        with torch.no_grad():
            t["n"].add_(1)
    return y.view(b, k, c).transpose(0, 1)  # (K, B, C)
