"""Build the one Scorer every command uses: the pinned classifier plus FID reference statistics.

The reference (mean and covariance of the classifier's features on the real MNIST
test set, and what that set scores) is pinned beside the classifier weights in
models/weights/mnist_test_reference.pt, keyed by the classifier's sha256 and the
test images' sha256. It is recomputed (about 5 s on 2 CPU cores) only when
either differs, e.g. for a non-canonical copy of MNIST.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from models.classifier import WEIGHTS_PATH, load_classifier
from models.metrics import FeatureStats, Scorer, all_metrics
from sweep.data import to_model_space

REFERENCE_PATH = WEIGHTS_PATH.parent / "mnist_test_reference.pt"


def images_sha256(images_u8: torch.Tensor) -> str:
    return hashlib.sha256(images_u8.contiguous().numpy().tobytes()).hexdigest()


def compute_reference(clf, test_images_u8: torch.Tensor) -> tuple[FeatureStats, dict]:
    device = next(clf.parameters()).device
    probs, feats = clf.predict(to_model_space(test_images_u8, device))
    ref = FeatureStats.of(feats.cpu())
    return ref, all_metrics(probs, feats.cpu(), ref)


def save_reference(path: Path, ref: FeatureStats, scores: dict, clf_sha: str, data_sha: str) -> None:
    from sweep.results import write_atomic

    state = {"mean": ref.mean, "cov": ref.cov, "scores": scores, "classifier_sha256": clf_sha,
             "data_sha256": data_sha}
    write_atomic(path, lambda p: torch.save(state, p))


def load_reference(clf, clf_sha: str, test_images_u8: torch.Tensor,
                   path: Path = REFERENCE_PATH) -> tuple[FeatureStats, dict]:
    """(reference feature stats, scores of the real test set), from the pinned file if it matches."""
    data_sha = images_sha256(test_images_u8)
    if path.is_file():
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)
            if st["classifier_sha256"] == clf_sha and st["data_sha256"] == data_sha:
                return FeatureStats(st["mean"], st["cov"]), dict(st["scores"])
        except Exception:  # a damaged cache is recomputed, never trusted
            pass
    return compute_reference(clf, test_images_u8)


def build_scorer(test_images_u8: torch.Tensor, device="cpu") -> tuple[Scorer, dict]:
    """(Scorer on device, scores of the real MNIST test set)."""
    clf, sha = load_classifier(device=device)
    ref, scores = load_reference(clf, sha, test_images_u8)
    return Scorer(clf, ref, sha), scores
