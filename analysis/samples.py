"""Sample grids: a run's saved samples as one image (Figure 4's panels, `gansweep trial`'s samples.png)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sweep.record.results import write_atomic


def tile(imgs: np.ndarray, ncol: int = 8, pad: int = 2) -> np.ndarray:
    """(N, H, W) uint8 -> one (rows*(H+pad)+pad, ncol*(W+pad)+pad) image with white gaps."""
    n, h, w = imgs.shape
    nrow = math.ceil(n / ncol)
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = imgs[i]
    return out


def save_sample_grid(samples_u8, path: Path, nrow: int = 8) -> None:
    """(N, 32, 32) uint8 -> one PNG grid, written atomically."""
    import torch
    from torchvision.utils import save_image

    x = torch.as_tensor(samples_u8).float().div(255).unsqueeze(1)  # (N, 1, 32, 32) in [0, 1]
    write_atomic(path, lambda p: save_image(x, p, nrow=nrow, padding=2, pad_value=1.0, format="png"))
