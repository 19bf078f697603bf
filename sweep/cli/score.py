"""`gansweep score --images X.npy`: I', IS, FID, classes, digit share of any images, as JSON."""
from __future__ import annotations

import json

from sweep.cli.common import add_data_args

WHAT = "score an array of images with the fixed classifier (I', IS, FID, classes, digit share as JSON)"
EXAMPLES = ["gansweep score --images samples.npy"]


def add_arguments(p) -> None:
    p.add_argument("--images", required=True, help=".npy of N x 28 x 28 or N x 32 x 32; uint8 "
                                                  "0..255 or float in [-1, 1]")
    add_data_args(p)


def run(a) -> int:
    from sweep.train.data import load_images, load_mnist
    from sweep.train.scoring import build_scorer

    images = load_images(a.images)  # validate before the slow loads
    mnist = load_mnist(a.data_root, a.download)
    scorer, _ = build_scorer(mnist.test_images)
    metrics = scorer.score(images)
    print(json.dumps({"n": int(images.shape[0]), **metrics, "digit_threshold": scorer.digit_threshold,
                      "classifier_sha256": scorer.classifier_sha256}))
    return 0
