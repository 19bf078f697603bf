"""MNIST, read once into memory.

The data root is, in order: --data-root, $GANSWEEP_DATA, ~/.cache/gansweep.
It is the folder torchvision.datasets.MNIST(root) reads (it holds MNIST/raw/).
Nothing is downloaded unless the user passes --download.

Images stay uint8 (N, 28, 28) until they reach the trial's device; there they
are padded to 32x32 and scaled to [-1, 1] once (`to_model_space`), so the
training loop indexes one resident tensor and does no per-batch host work.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from sweep.errors import UserError

DEFAULT_ROOT = Path("~/.cache/gansweep")


class DataError(Exception):
    """MNIST is missing or unreadable: one line for the user."""


def resolve_root(data_root: str | os.PathLike | None) -> Path:
    if data_root:
        return Path(data_root).expanduser()
    env = os.environ.get("GANSWEEP_DATA")
    return Path(env).expanduser() if env else DEFAULT_ROOT.expanduser()


@dataclass(frozen=True)
class Mnist:
    train_images: torch.Tensor  # (60000, 28, 28) uint8
    train_labels: torch.Tensor  # (60000,) int64
    test_images: torch.Tensor  # (10000, 28, 28) uint8
    test_labels: torch.Tensor  # (10000,) int64


# torchvision's raw layout (root/MNIST/raw): what torchvision.datasets.MNIST(root) reads and downloads.
RAW_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
COUNTS = {"train": 60000, "test": 10000}


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes (LeCun's MNIST format): a big-endian header (two zero bytes,
    the type 0x08, the number of dimensions, each dimension as a 4-byte integer), then the data."""
    import numpy as np

    raw = path.read_bytes()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"cannot read MNIST: {path} is not an IDX file of unsigned bytes")
    n_dims = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", n_dims, offset=4))
    body = raw[4 + 4 * n_dims:]
    if len(body) != int(np.prod(shape)):
        raise DataError(f"cannot read MNIST: {path} holds {len(body)} bytes of data, its header says "
                        f"{' x '.join(map(str, shape))} (a partial download?)")
    return torch.from_numpy(np.frombuffer(body, np.uint8).reshape(shape).copy())


def load_mnist(data_root: str | os.PathLike | None = None, download: bool = False) -> Mnist:
    """The four MNIST arrays, read from root/MNIST/raw with numpy (torchvision, about 2.5 s to
    import, only downloads them, with --download)."""
    root = resolve_root(data_root)
    raw = root / "MNIST" / "raw"
    if download and not all((raw / f).exists() for f in RAW_FILES.values()):
        from torchvision.datasets import MNIST

        try:
            for train in (True, False):
                MNIST(str(root), train=train, download=True)
        except (RuntimeError, OSError) as e:  # no network, unreadable files
            raise DataError(f"cannot get MNIST into {root}: {e}") from None
    missing = [f for f in RAW_FILES.values() if not (raw / f).is_file()]
    if missing:
        raise DataError(f"MNIST not found under {root} (no {raw / missing[0]}): pass --data-root DIR or set "
                        "GANSWEEP_DATA to a folder holding MNIST/raw, or add --download")
    try:
        arrays = {k: read_idx(raw / f) for k, f in RAW_FILES.items()}
    except OSError as e:
        raise DataError(f"cannot read MNIST under {root}: {e}") from None
    for split, n in COUNTS.items():
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape != (n, 28, 28) or labels.shape != (n,):
            raise DataError(f"cannot read MNIST under {root}: the {split} set is {tuple(images.shape)} images and "
                            f"{tuple(labels.shape)} labels, not ({n}, 28, 28) and ({n},)")
    return Mnist(arrays["train_images"], arrays["train_labels"].long(), arrays["test_images"],
                 arrays["test_labels"].long())


def to_model_space(images_u8: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, 28, 28) or (N, 32, 32) -> float32 (N, 1, 32, 32) in [-1, 1], on device.

    28x28 digits get 2 pixels of background (-1) on each side, as in the paper.
    """
    x = images_u8.to(device=device, non_blocking=True).float().div_(127.5).sub_(1.0)
    if x.shape[-1] == 28:
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    return x.unsqueeze(1)


def load_images(path: str):
    """A user's .npy of images -> (N, 1, 32, 32) float in [-1, 1], validated."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--images {path}: no such file")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"--images {path}: not a readable .npy array ({str(e)[:80]})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.shape[1:] not in ((28, 28), (32, 32)):
        raise UserError(f"--images {path}: expected shape N x 28 x 28 or N x 32 x 32, got "
                        f"{' x '.join(map(str, getattr(arr, 'shape', ())))}")
    if arr.shape[0] < 2:
        raise UserError(f"--images {path}: need at least 2 images, got {arr.shape[0]}")
    if arr.dtype == np.uint8:
        return to_model_space(torch.from_numpy(arr))
    if arr.dtype.kind != "f":
        raise UserError(f"--images {path}: dtype {arr.dtype} not supported; use uint8 (0..255) "
                        "or float in [-1, 1]")
    if not np.isfinite(arr).all():
        raise UserError(f"--images {path}: contains NaN or inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1.0001 or hi > 1.0001:
        raise UserError(f"--images {path}: float images must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}]")
    x = torch.from_numpy(arr.astype(np.float32)).clamp(-1, 1)
    if x.shape[-1] == 28:
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    return x.unsqueeze(1)
