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

from models import outliers
from models.classifier import (
    DIGIT_THRESHOLD,
    WEIGHTS_PATH,
    digit_threshold,
    file_sha256,
    load_classifier,
    train_classifier,
)
from models.metrics import FeatureStats, Scorer, all_metrics
from sweep.record.results import write_atomic
from sweep.train.data import to_model_space

REFERENCE_PATH = WEIGHTS_PATH.parent / "mnist_test_reference.pt"


def images_sha256(images_u8: torch.Tensor) -> str:
    return hashlib.sha256(images_u8.contiguous().numpy().tobytes()).hexdigest()


def compute_reference(clf, test_images_u8: torch.Tensor,
                      threshold: float = DIGIT_THRESHOLD) -> tuple[FeatureStats, dict]:
    device = next(clf.parameters()).device
    probs, feats = clf.predict(to_model_space(test_images_u8, device))
    ref = FeatureStats.of(feats.cpu())
    return ref, all_metrics(probs, feats.cpu(), ref, threshold)


def save_reference(path: Path, ref: FeatureStats, scores: dict, clf_sha: str, data_sha: str) -> None:
    state = {"mean": ref.mean, "cov": ref.cov, "scores": scores, "classifier_sha256": clf_sha,
             "data_sha256": data_sha}
    write_atomic(path, lambda p: torch.save(state, p))


def load_reference(clf, clf_sha: str, test_images_u8: torch.Tensor, path: Path = REFERENCE_PATH,
                   threshold: float = DIGIT_THRESHOLD) -> tuple[FeatureStats, dict]:
    """(reference feature stats, scores of the real test set), from the pinned file if it matches."""
    data_sha = images_sha256(test_images_u8)
    if path.is_file():
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)
            if st["classifier_sha256"] == clf_sha and st["data_sha256"] == data_sha:
                return FeatureStats(st["mean"], st["cov"]), dict(st["scores"])
        except Exception:  # a damaged cache is recomputed, never trusted
            pass
    return compute_reference(clf, test_images_u8, threshold)


def build_scorer(test_images_u8: torch.Tensor, device="cpu",
                 weights: Path | None = None) -> tuple[Scorer, dict]:
    """(Scorer on device, scores of the real MNIST test set).

    weights: another classifier file to compare with the pinned one (`gansweep
    classifier check --weights`); its digit threshold is derived from the test set
    the same way the pinned one was.
    """
    clf, sha = load_classifier(weights, device=device)
    threshold = DIGIT_THRESHOLD if weights is None else \
        digit_threshold(clf, to_model_space(test_images_u8, device))
    ref, scores = load_reference(clf, sha, test_images_u8, threshold=threshold)
    return Scorer(clf, ref, sha, threshold), scores


# What `gansweep classifier check` scores: real digits that must score well or like one
# class, then every outlier kind, trained-on and held-out, which must score like non-digits.
CHECK_N = 1000  # samples per outlier kind
CHECK_SEED = 20261124  # outliers for the check: not the training stream's seed


def check_sets(mnist, n: int = CHECK_N, seed: int = CHECK_SEED) -> list[tuple[str, str, torch.Tensor]]:
    """(name, group, images (N, 1, 32, 32) in [-1, 1]) for every set the check scores.

    The outliers cut up *test* digits, which the classifier never trained on."""
    test = to_model_space(mnist.test_images)
    labels = mnist.test_labels
    sets = [("MNIST test set", "real", test), ("test 1s only", "real", test[labels == 1]),
            ("test digits 0-4", "real", test[labels <= 4])]
    for group, kinds in (("outlier, trained on", outliers.TRAIN), ("outlier, held out", outliers.HELD_OUT)):
        for i, kind in enumerate(kinds):
            sets.append((kind, group, outliers.make(kind, n, test, seed + i)))
    return sets


def check_scorer(scorer: Scorer, mnist, n: int = CHECK_N) -> list[dict]:
    """One row of scores per check set (see check_sets)."""
    device = next(scorer.classifier.parameters()).device
    return [{"set": name, "group": group, "n": int(x.shape[0]), **scorer.score(x.to(device))}
            for name, group, x in check_sets(mnist, n)]


def format_check(rows: list[dict]) -> str:
    """The rows of `classifier check` as an aligned text table."""
    lines = [f"{'set':<22} {'group':<20} {'n':>5} {'I_':>7} {'IS':>6} {'FID':>9} {'classes':>7} "
             f"{'digit_share':>11}"]
    for r in rows:
        lines.append(f"{r['set']:<22} {r['group']:<20} {r['n']:>5} {r['i_prime']:>7.3f} "
                     f"{r['inception_score']:>6.2f} {r['fid']:>9.1f} {r['classes_covered']:>7} "
                     f"{r['digit_share']:>11.3f}")
    return "\n".join(lines)


def train_and_pin(mnist, out: Path, epochs: int) -> tuple[float, str, float]:
    """`gansweep classifier train`: train the classifier (outlier exposure, models/classifier.py),
    write its weights to `out` atomically and, when `out` is the committed file, pin the FID
    reference of the new weights beside them. Returns (test accuracy, sha256, digit threshold)."""
    test_x = to_model_space(mnist.test_images)
    model, acc = train_classifier(to_model_space(mnist.train_images), mnist.train_labels, test_x,
                                  mnist.test_labels, epochs=epochs)
    threshold = digit_threshold(model, test_x)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda p: torch.save(model.state_dict(), p))
    sha = file_sha256(out)
    if out == WEIGHTS_PATH:  # pin the FID reference of the new weights beside them
        ref, scores = compute_reference(model, mnist.test_images, threshold)
        save_reference(REFERENCE_PATH, ref, scores, sha, images_sha256(mnist.test_images))
    return acc, sha, threshold
