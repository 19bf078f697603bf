"""Images that are not digits: outlier exposure for the scorer, and the scorer's own test set.

    gansweep classifier check          # every kind below scored by the committed classifier

A classifier trained on digits alone is confidently wrong on anything else: the
first scorer gave a noise-drawing GAN I' 3.96, as high as an EBGAN that draws
digits. Outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019) trains
the classifier to answer "uniform over the 10 classes" on a stream of
non-digits, so noise, shapes and scrambled digits score I' ~ 0 and fall below
the digit test (models/classifier.py DIGIT_THRESHOLD).

Every kind is a function (n, digits, gen) -> (n, 1, 32, 32) float in [-1, 1]
(the generators' space), drawing from a seeded torch.Generator; `digits` is a
pool of real digits in the same space, which the scrambled / fragment kinds
cut up (training digits while training, test digits when checking). The kinds
imitate what a failed generator draws: noise of every grain and contrast,
speckle, flat or striped images, scrambled or broken digits, strokes that are
no digit, digits drowned in noise or inverted.

Generalisation, not memorisation: the HELD_OUT kinds are never shown to the
classifier in training; `gansweep classifier check` reports them apart.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

SIDE = 32


# --------------------------------------------------------------------------- helpers
def _u(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 1, 1, 1) uniform in [lo, hi): one parameter per image, broadcast over pixels."""
    return torch.rand(n, 1, 1, 1, generator=gen).mul_(hi - lo).add_(lo)


def _pick(digits: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    return digits[torch.randint(0, digits.shape[0], (n,), generator=gen)]


def _to_range(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities (0 = background, as MNIST) -> [-1, 1]."""
    return x01.clamp(0, 1).mul(2).sub(1)


def _stretch(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1]."""
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centre coordinates (1, 1, 32, 32) in [0, 32)."""
    c = torch.arange(SIDE, dtype=torch.float32) + 0.5
    return c.view(1, 1, 1, SIDE).expand(1, 1, SIDE, SIDE), c.view(1, 1, SIDE, 1).expand(1, 1, SIDE, SIDE)


def _low_res_noise(n: int, gen: torch.Generator, sides=(2, 4, 8, 16)) -> torch.Tensor:
    """Smooth noise: Gaussian noise at a random coarse resolution, upsampled (n, 1, 32, 32)."""
    out = torch.empty(n, 1, SIDE, SIDE)
    which = torch.randint(0, len(sides), (n,), generator=gen)
    for i, s in enumerate(sides):
        idx = (which == i).nonzero().flatten()
        if len(idx):
            coarse = torch.randn(len(idx), 1, s, s, generator=gen)
            out[idx] = F.interpolate(coarse, size=(SIDE, SIDE), mode="bicubic", align_corners=False)
    return out


def _draw_segments(p0: torch.Tensor, p1: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Anti-aliased line segments, brightest where they cross.

    p0, p1: (n, s, 2) end points in pixels (x, y); width: (n, 1) stroke width.
    Returns (n, 1, 32, 32) intensities in [0, 1].
    """
    gx, gy = _grid()
    pix = torch.stack([gx.flatten(), gy.flatten()], dim=-1)  # (1024, 2)
    d = p1 - p0  # (n, s, 2)
    rel = pix.view(1, 1, -1, 2) - p0.unsqueeze(2)  # (n, s, 1024, 2)
    t = ((rel * d.unsqueeze(2)).sum(-1) / (d * d).sum(-1, keepdim=True).clamp_min(1e-6)).clamp(0, 1)
    closest = p0.unsqueeze(2) + t.unsqueeze(-1) * d.unsqueeze(2)  # (n, s, 1024, 2)
    dist = (pix.view(1, 1, -1, 2) - closest).norm(dim=-1).amin(dim=1)  # (n, 1024)
    ink = (width / 2 + 0.5 - dist).clamp(0, 1)  # 1 inside the stroke, a 1 px soft edge
    return ink.view(-1, 1, SIDE, SIDE)


# --------------------------------------------------------------------------- the kinds
def uniform_noise(n, digits, gen):
    """Every pixel uniform in [-1, 1]."""
    return torch.rand(n, 1, SIDE, SIDE, generator=gen).mul_(2).sub_(1)


def gaussian_noise(n, digits, gen):
    """Gaussian pixels with a random mean and spread, clipped."""
    mean, std = _u(n, -1.0, 0.6, gen), _u(n, 0.05, 1.2, gen)
    return (torch.randn(n, 1, SIDE, SIDE, generator=gen) * std + mean).clamp(-1, 1)


def binary_speckle(n, digits, gen):
    """Black-and-white speckle: each pixel white with a random probability 2% to 70%."""
    p = _u(n, 0.02, 0.7, gen)
    return (torch.rand(n, 1, SIDE, SIDE, generator=gen) < p).float().mul(2).sub(1)


def gan_speckle(n, digits, gen):
    """What a collapsed generator draws: tanh of noise with a random gain and offset, over a
    smooth gray field, often with saturated pixels: gray and black-and-white speckle."""
    gain, offset = _u(n, 0.3, 6.0, gen), _u(n, -2.5, 1.0, gen)
    field = _low_res_noise(n, gen) * _u(n, 0.0, 1.5, gen)
    return torch.tanh(torch.randn(n, 1, SIDE, SIDE, generator=gen) * gain + offset + field)


def smooth_noise(n, digits, gen):
    """Smooth random fields at a random grain, contrast-stretched, sometimes thresholded to blobs."""
    x = _stretch(_low_res_noise(n, gen))
    blobs = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    x = torch.where(blobs, (x > _u(n, 0.4, 0.8, gen)).float(), x)
    return _to_range(x)


def constant(n, digits, gen):
    """A flat gray level, with faint noise."""
    return (_u(n, -1.0, 1.0, gen) + 0.03 * torch.randn(n, 1, SIDE, SIDE, generator=gen)).clamp(-1, 1)


def gratings(n, digits, gen):
    """Sinusoidal gratings and checkerboards of random frequency, phase and orientation."""
    gx, gy = _grid()
    theta, freq, phase = _u(n, 0, math.pi, gen), _u(n, 0.08, 0.9, gen), _u(n, 0, 2 * math.pi, gen)
    wave = torch.sin(freq * (gx * torch.cos(theta) + gy * torch.sin(theta)) + phase)
    check = torch.sin(freq * gx + phase) * torch.sin(freq * gy + phase)
    x = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.3, check, wave)
    hard = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    return torch.where(hard, torch.sign(x), x)


def shapes(n, digits, gen):
    """One to four rectangles or ellipses, filled or outlined, on black."""
    gx, gy = _grid()
    canvas = torch.zeros(n, 1, SIDE, SIDE)
    for _ in range(4):
        cx, cy = _u(n, 4, 28, gen), _u(n, 4, 28, gen)
        a, b = _u(n, 2, 14, gen), _u(n, 2, 14, gen)
        ellipse = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
        r_ell = ((gx - cx) / a) ** 2 + ((gy - cy) / b) ** 2
        r_box = torch.maximum((gx - cx).abs() / a, (gy - cy).abs() / b)
        r = torch.where(ellipse, r_ell.sqrt(), r_box)
        outline = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
        rim = 1.0 - 2.0 / torch.minimum(a, b)  # about 2 px of outline
        mask = (r < 1) & (~outline | (r > rim))
        present = torch.rand(n, 1, 1, 1, generator=gen) < 0.7
        canvas = torch.maximum(canvas, (mask & present).float() * _u(n, 0.5, 1.0, gen))
    return _to_range(canvas)


def scribbles(n, digits, gen):
    """Four to eight random strokes crossing the canvas: ink, but no digit."""
    s = 8
    p0 = torch.rand(n, s, 2, generator=gen) * 28 + 2
    p1 = torch.rand(n, s, 2, generator=gen) * 28 + 2
    keep = torch.arange(s).view(1, s) < torch.randint(4, s + 1, (n, 1), generator=gen)
    p1 = torch.where(keep.unsqueeze(-1), p1, p0)  # a dropped stroke is a point; hide it below
    p0 = torch.where(keep.unsqueeze(-1), p0, torch.full_like(p0, -100.0))
    p1 = torch.where(keep.unsqueeze(-1), p1, torch.full_like(p1, -100.0))
    return _to_range(_draw_segments(p0, p1, _u(n, 1.5, 3.5, gen).view(n, 1)))


def pixel_shuffle(n, digits, gen):
    """A digit's pixels in a random order: the ink of a digit, none of its shape."""
    x = _pick(digits, n, gen).reshape(n, -1)
    perm = torch.rand(n, SIDE * SIDE, generator=gen).argsort(dim=1)
    return x.gather(1, perm).view(n, 1, SIDE, SIDE)


def patch_shuffle(n, digits, gen):
    """A digit cut into 4x4 or 8x8 pixel patches, shuffled."""
    x = _pick(digits, n, gen)
    p = 8 if torch.rand((), generator=gen) < 0.5 else 4
    k = SIDE // p
    patches = x.view(n, 1, k, p, k, p).permute(0, 1, 2, 4, 3, 5).reshape(n, k * k, p, p)
    perm = torch.rand(n, k * k, generator=gen).argsort(dim=1)
    patches = patches.gather(1, perm.view(n, k * k, 1, 1).expand(-1, -1, p, p))
    return patches.view(n, 1, k, k, p, p).permute(0, 1, 2, 4, 3, 5).reshape(n, 1, SIDE, SIDE)


def fragments(n, digits, gen):
    """A small piece of a digit (6 to 12 px square) blown up to the whole canvas."""
    x = _pick(digits, n, gen)
    out = torch.empty_like(x)
    for i in range(n):
        s = int(torch.randint(6, 13, (), generator=gen))
        y0, x0 = (int(v) for v in torch.randint(2, 30 - s + 1, (2,), generator=gen))
        out[i] = F.interpolate(x[i:i + 1, :, y0:y0 + s, x0:x0 + s], size=(SIDE, SIDE),
                               mode="bilinear", align_corners=False)[0]
    return out


def drowned_digits(n, digits, gen):
    """A digit under noise that outweighs it (digit weight 0.15 to 0.4)."""
    x = _pick(digits, n, gen)
    a = _u(n, 0.15, 0.4, gen)
    return (a * x + (1 - a) * gan_speckle(n, digits, gen)).clamp(-1, 1)


def blends(n, digits, gen):
    """Two digits printed over each other: what a generator stuck between two modes draws.

    Of three candidate partners the one adding the most ink is kept, so the pair reads as
    two digits: a 1 inside an 8, or two alike 7s, *is* a digit, and training "uniform" on
    it made the classifier doubt real digits (IS of the test set 9.58 instead of 9.85).
    (Blurred means of several digits were tried as well and dropped: they made it doubt
    blurry real digits; the best mini-sweep EBGAN fell from I' 4.4 to 1.8.)"""
    a = _pick(digits, n, gen)  # (n, 1, 32, 32)
    cands = torch.stack([_pick(digits, n, gen) for _ in range(3)])  # (3, n, 1, 32, 32)
    union = torch.maximum(a.unsqueeze(0), cands)
    best = (union > 0).sum(dim=(2, 3, 4)).argmax(dim=0)  # (n,) the partner with the most ink
    return union[best, torch.arange(n)]


def inverted(n, digits, gen):
    """Dark strokes on a white ground: a digit's negative."""
    return -_pick(digits, n, gen)


# Held out of training: reported apart by `gansweep classifier check`.
def overlays(n, digits, gen):
    """Three digits printed over each other. (Kin to the trained `blends`, added after a first
    classifier without them let these through: I' 2.69, digit_share 0.41.)"""
    return torch.maximum(torch.maximum(_pick(digits, n, gen), _pick(digits, n, gen)),
                         _pick(digits, n, gen))


def random_walks(n, digits, gen):
    """A long random walk drawn as one pen stroke."""
    steps = 30
    pts = torch.cumsum(torch.randn(n, steps, 2, generator=gen) * 2.5, dim=1) + 16
    pts = pts.clamp(2, 30)
    return _to_range(_draw_segments(pts[:, :-1], pts[:, 1:], _u(n, 1.5, 3.0, gen).view(n, 1)))


def tiled_digits(n, digits, gen):
    """Four digits shrunk into a 2 x 2 tile."""
    small = [F.avg_pool2d(_pick(digits, n, gen), 2) for _ in range(4)]  # (n, 1, 16, 16) each
    return torch.cat([torch.cat(small[:2], dim=3), torch.cat(small[2:], dim=3)], dim=2)


def dots(n, digits, gen):
    """Two to ten round blobs of random size."""
    gx, gy = _grid()
    canvas = torch.zeros(n, 1, SIDE, SIDE)
    count = torch.randint(2, 11, (n, 1, 1, 1), generator=gen)
    for i in range(10):
        cx, cy, r = _u(n, 3, 29, gen), _u(n, 3, 29, gen), _u(n, 1.0, 4.0, gen)
        blob = torch.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * r * r))
        canvas = torch.maximum(canvas, blob * (i < count).float())
    return _to_range(canvas)


def barcodes(n, digits, gen):
    """Vertical or horizontal bars of random widths."""
    widths = torch.randint(1, 5, (n, SIDE), generator=gen)
    pos = torch.cumsum(widths, dim=1)  # bar edges
    ink = torch.rand(n, SIDE, generator=gen) < 0.5
    idx = torch.searchsorted(pos, torch.arange(SIDE).expand(n, SIDE).contiguous(), right=True)
    line = ink.gather(1, idx.clamp(max=SIDE - 1)).float().mul(2).sub(1)  # (n, 32)
    x = line.view(n, 1, 1, SIDE).expand(n, 1, SIDE, SIDE)
    horizontal = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    return torch.where(horizontal, x.transpose(2, 3), x).contiguous()


def edge_crops(n, digits, gen):
    """A digit pushed two thirds off the canvas: only an edge of it shows."""
    x = _pick(digits, n, gen)
    out = torch.full_like(x, -1.0)
    for i in range(n):
        dy, dx = (int(v) for v in torch.randint(-20, 21, (2,), generator=gen))
        if abs(dy) < 16 and abs(dx) < 16:  # keep at least one shift large
            dy = 16 if dy >= 0 else -16
        src = x[i, :, max(0, -dy):SIDE - max(0, dy), max(0, -dx):SIDE - max(0, dx)]
        out[i, :, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
    return out


Kind = Callable[[int, torch.Tensor, torch.Generator], torch.Tensor]
TRAIN: dict[str, Kind] = {f.__name__: f for f in (
    uniform_noise, gaussian_noise, binary_speckle, gan_speckle, smooth_noise, constant, gratings,
    shapes, scribbles, pixel_shuffle, patch_shuffle, fragments, drowned_digits, blends, inverted)}
HELD_OUT: dict[str, Kind] = {f.__name__: f for f in (
    overlays, random_walks, tiled_digits, dots, barcodes, edge_crops)}
KINDS: dict[str, Kind] = {**TRAIN, **HELD_OUT}


def make(kind: str, n: int, digits: torch.Tensor, seed: int) -> torch.Tensor:
    """n images of one kind, (n, 1, 32, 32) in [-1, 1], the same for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    return KINDS[kind](n, digits, gen).float().clamp(-1, 1)


class OutlierStream:
    """The training stream: each batch mixes every TRAIN kind in equal expectation.

    Generated on the fly on the CPU from one seeded generator, so `gansweep classifier
    train` sees the same stream every time and no outlier set is stored.
    """

    def __init__(self, digits: torch.Tensor, seed: int, kinds: dict[str, Kind] = TRAIN):
        self.digits = digits  # (N, 1, 32, 32) in [-1, 1]: the classifier's training digits
        self.kinds = list(kinds.values())
        self.gen = torch.Generator().manual_seed(seed)

    def batch(self, n: int) -> torch.Tensor:
        k = len(self.kinds)
        per = -(-n // k)  # ceil: every kind contributes, then a random n are kept
        x = torch.cat([f(per, self.digits, self.gen) for f in self.kinds])  # (k * per, 1, 32, 32)
        keep = torch.randperm(x.shape[0], generator=self.gen)[:n]
        return x[keep].float().clamp(-1, 1)
