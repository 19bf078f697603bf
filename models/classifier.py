"""The fixed MNIST classifier that scores every trial (the paper: "a regular 3-layer ConvNet").

    gansweep classifier train --data-root ../shared/mnist     # rewrites models/weights/

One classifier for all runs matters more than its exact architecture: I' is
unbounded and depends on the classifier's confidence (../shared/PAPER.md), so
the committed weights are pinned by sha256 and the hash is stored with every
score.

Input: (N, 1, 32, 32) in [-1, 1] (padded MNIST, as the generators produce).
Features for FID: the 128-d penultimate layer (after the three conv blocks and
one fully-connected layer), as FID uses Inception's penultimate pool features.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_PATH = Path(__file__).parent / "weights" / "mnist_cnn.pt"
# sha256 of the committed weights file; `gansweep classifier train` prints the
# new value to put here when the weights are deliberately retrained.
WEIGHTS_SHA256 = "f4caf623bddca37598b91b251f8872bd1aeb68d57ea6d5a406dce8577003c32d"
FEATURE_DIM = 128


class ClassifierError(Exception):
    """The classifier weights are missing, altered or unreadable."""


class MnistCNN(nn.Module):
    def __init__(self):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(), nn.MaxPool2d(2))

        self.convs = nn.Sequential(block(1, 32), block(32, 64), block(64, 128))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, FEATURE_DIM), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x)  # (N, 1, 32, 32) -> (N, 128, 4, 4)
        return self.fc(h)  # (N, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))  # (N, 10) logits

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """(softmax probabilities (N, 10), features (N, 128)) in float32, eval mode."""
        was_training = self.training
        self.eval()
        probs, feats = [], []
        for i in range(0, x.shape[0], batch_size):
            f = self.features(x[i:i + batch_size])
            feats.append(f)
            probs.append(F.softmax(self.head(f), dim=1))
        self.train(was_training)
        return torch.cat(probs), torch.cat(feats)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_classifier(path: Path | None = None, expected_sha256: str | None = None,
                    device: str | torch.device = "cpu") -> tuple[MnistCNN, str]:
    """Load and verify the classifier; returns (model in eval mode, sha256)."""
    path = Path(path) if path is not None else WEIGHTS_PATH
    expected = expected_sha256 if expected_sha256 is not None else (
        WEIGHTS_SHA256 if path == WEIGHTS_PATH else None)
    if not path.is_file():
        raise ClassifierError(f"classifier weights not found at {path}; "
                              "run `gansweep classifier train` to create them")
    digest = file_sha256(path)
    if expected is not None and digest != expected:
        raise ClassifierError(f"classifier weights {path} have sha256 {digest[:12]}..., expected "
                              f"{expected[:12]}...; scores would not be comparable across runs")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = MnistCNN()
        model.load_state_dict(state)
    except Exception as e:  # a damaged or foreign file
        raise ClassifierError(f"cannot read classifier weights {path}: {e}") from None
    return model.to(device).eval(), digest


def train_classifier(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor, *, epochs: int = 4, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, log=print) -> tuple[MnistCNN, float]:
    """Train on the full MNIST training set (x: (N,1,32,32) in [-1,1]); returns (model, test accuracy)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MnistCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((train_x.shape[0] + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(train_x.shape[0], generator=gen)
        for i in range(0, train_x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            x = train_x[idx]
            # small random shifts (+-2 px) make the scorer robust to off-centre samples
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, test_x, test_y)
        log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, test accuracy {acc:.4%} "
            f"({time.time() - t0:.0f}s)")
    return model.eval(), acc


def accuracy(model: MnistCNN, x: torch.Tensor, y: torch.Tensor) -> float:
    probs, _ = model.predict(x)
    return (probs.argmax(1) == y).float().mean().item()
