"""I', IS, FID, coverage and KL on crafted probability tables, then on real MNIST."""
import math

import numpy as np
import pytest
import torch

from models.metrics import (FeatureStats, classes_covered, digit_share, frechet_distance,
                            inception_score, kl_to_uniform, modified_inception_score)

EPS = 1e-12
LOG_EPS = math.log(EPS / (1 + 9 * EPS))  # log of a clamped zero after renormalisation


def test_uniform_predictions():
    p = torch.full((50, 10), 0.1)
    assert modified_inception_score(p) == pytest.approx(0.0, abs=1e-12)
    assert inception_score(p) == pytest.approx(1.0)


def test_one_hot_predictions_spread_over_all_classes():
    p = torch.eye(10).repeat(3, 1)  # 30 confident samples, 3 per class
    # p(y) uniform; KL(p(y) || onehot) = sum_y 0.1 (log 0.1 - log p(y|x))
    # = 0.1 log 0.1 - 0.1 log(1/(1+9eps)) + 0.9 (log 0.1 - LOG_EPS)
    expected = math.log(0.1) - 0.1 * math.log(1 / (1 + 9 * EPS)) - 0.9 * LOG_EPS
    assert modified_inception_score(p, EPS) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(22.5655, abs=1e-3)
    assert inception_score(p, EPS) == pytest.approx(10.0, rel=1e-6)
    assert classes_covered(p) == 10
    assert kl_to_uniform(p) == pytest.approx(0.0, abs=1e-12)


def test_single_class():
    p = torch.zeros(40, 10)
    p[:, 3] = 1.0
    assert modified_inception_score(p) == pytest.approx(0.0, abs=1e-9)
    assert inception_score(p) == pytest.approx(1.0)
    assert classes_covered(p) == 1
    assert kl_to_uniform(p) == pytest.approx(math.log(10))


def test_a_collapsed_generator_scores_the_floor_and_never_below():
    """Every sample the same probability row (one image, one class): I' is 0 and IS 1 up to rounding,
    and never below, whatever the row: rounding gave -3e-16 and 0.9999999999999998 for 177 of these
    200 rows (a range check of IS in [1, 10] failed on an AMD EPYC CPU)."""
    torch.manual_seed(0)
    for _ in range(200):
        p = torch.softmax(torch.randn(10) * 5, dim=0).expand(64, 10).clone()  # (64, 10), rows equal
        assert 0.0 <= modified_inception_score(p) < 1e-12 and 1.0 <= inception_score(p) < 1.0 + 1e-12


def test_clamp_changes_the_unbounded_score():
    p = torch.eye(10).repeat(2, 1)
    assert modified_inception_score(p, 1e-6) < modified_inception_score(p, 1e-12)


def test_coverage_threshold():
    # 96 samples of class 0, 3 of class 1, 1 of class 2: 1% threshold keeps 0 and 1 (3%) and 2 (1%)
    labels = torch.tensor([0] * 96 + [1] * 3 + [2])
    p = torch.nn.functional.one_hot(labels, 10).float()
    assert classes_covered(p, 0.01) == 3
    assert classes_covered(p, 0.02) == 2
    # KL(hist || uniform) = sum h log(10 h)
    h = np.array([0.96, 0.03, 0.01])
    assert kl_to_uniform(p) == pytest.approx(float((h * np.log(10 * h)).sum()))


def test_digit_share_counts_confident_samples():
    # top probabilities 0.95, 0.9, 0.5, 0.1 (uniform): at threshold 0.9 two of four pass
    p = torch.tensor([[0.95] + [0.05 / 9] * 9, [0.1] * 8 + [0.9, 0.0], [0.5, 0.5] + [0.0] * 8, [0.1] * 10])
    assert digit_share(p, 0.9) == 0.5
    assert digit_share(p, 0.95) == 0.25  # the threshold itself passes
    assert digit_share(p, 0.1) == 1.0 and digit_share(p, 0.96) == 0.0


def test_frechet_distance():
    torch.manual_seed(0)
    f = torch.randn(500, 8, dtype=torch.float64)
    s = FeatureStats.of(f)
    assert frechet_distance(s, s) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, 2.0, 0, 0, 0, 0, 0, 0], dtype=torch.float64)
    assert frechet_distance(FeatureStats.of(f + shift), s) == pytest.approx(5.0, rel=1e-6)
    # diagonal covariances: FID = sum (sqrt(a) - sqrt(b))^2 for the variances
    a = FeatureStats(torch.zeros(2, dtype=torch.float64), torch.diag(torch.tensor([4.0, 9.0], dtype=torch.float64)))
    b = FeatureStats(torch.zeros(2, dtype=torch.float64), torch.diag(torch.tensor([1.0, 1.0], dtype=torch.float64)))
    assert frechet_distance(a, b) == pytest.approx((2 - 1) ** 2 + (3 - 1) ** 2)


def test_classifier_accuracy_and_hash(mnist):
    from models.classifier import WEIGHTS_SHA256, accuracy, load_classifier
    from sweep.train.data import to_model_space

    clf, sha = load_classifier()
    assert sha == WEIGHTS_SHA256
    assert accuracy(clf, to_model_space(mnist.test_images), mnist.test_labels) >= 0.990


def test_real_mnist_scores_high_and_one_digit_collapses(mnist, scorer):
    from sweep.train.data import to_model_space

    from models.metric_names import SCORE_KEYS

    real = scorer.score(to_model_space(mnist.test_images))
    assert tuple(real) == SCORE_KEYS  # every score the tables have a column for, in their order
    assert real["inception_score"] >= 9.5
    assert real["classes_covered"] == 10
    assert real["fid"] == pytest.approx(0.0, abs=1e-3)  # the reference is this very set
    ones = scorer.score(to_model_space(mnist.test_images[mnist.test_labels == 1]))
    assert ones["i_prime"] < 0.2
    assert ones["inception_score"] < 1.2
    assert ones["classes_covered"] == 1
    assert ones["fid"] > 50 * (real["fid"] + 1)


def test_pinned_fid_reference_matches_a_recomputation(mnist):
    from models.classifier import load_classifier
    from sweep.train.scoring import REFERENCE_PATH, compute_reference, images_sha256, load_reference

    clf, sha = load_classifier()
    state = torch.load(REFERENCE_PATH, weights_only=True)
    assert state["classifier_sha256"] == sha and state["data_sha256"] == images_sha256(mnist.test_images)
    pinned, pinned_scores = load_reference(clf, sha, mnist.test_images)
    fresh, fresh_scores = compute_reference(clf, mnist.test_images)
    assert torch.allclose(pinned.mean, fresh.mean, atol=1e-6)
    assert torch.allclose(pinned.cov, fresh.cov, rtol=1e-5, atol=1e-6)
    assert pinned_scores["inception_score"] == pytest.approx(fresh_scores["inception_score"], rel=1e-6)
    # a copy of MNIST that differs is not matched against the pinned statistics
    other, _ = load_reference(clf, sha, mnist.test_images[:5000])
    assert not torch.allclose(other.mean, pinned.mean)
