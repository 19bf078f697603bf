"""`gansweep classifier train | check`: the fixed MNIST classifier behind every score."""
from __future__ import annotations

import json
from pathlib import Path

from sweep.cli.common import Parser, add_data_args
from sweep.errors import UserError

WHAT = "train or check the fixed MNIST classifier behind every score"
EXAMPLES = ["gansweep classifier check", "gansweep classifier train --out my_cnn.pt"]


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    train = sub.add_parser("train", help="train on the full MNIST training set, with outlier exposure",
                           description="Train the classifier on the full MNIST training set, with outlier exposure.")
    train.add_argument("--epochs", type=int, default=None, help="passes over the training digits (default: "
                                                                "those that made the committed weights)")
    train.add_argument("--out", default=None, help="weights file (default: the committed one)")
    add_data_args(train)
    check = sub.add_parser("check", help="accuracy, and scores of real digits and of every outlier kind",
                           description="Accuracy, and scores of real digits and of every outlier kind "
                                       "(noise, garbage, one class): what the instrument says about inputs "
                                       "that must score badly.")
    check.add_argument("--weights", default=None,
                       help="another classifier file to check (default: the committed, pinned one)")
    check.add_argument("--json", default=None, help="also write the rows to this JSON file")
    check.add_argument("--n", type=int, default=None, metavar="N",
                       help="images per set of non-digits (default: 1,000, as docs/scoring.md's table)")
    add_data_args(check)


def run(a) -> int:
    from models.classifier import TRAIN_EPOCHS, WEIGHTS_PATH, accuracy
    from sweep.record.results import write_atomic
    from sweep.train.data import load_mnist, to_model_space
    from sweep.train.scoring import CHECK_N, build_scorer, check_scorer, format_check, train_and_pin

    # validate before the slow loads
    if a.action == "check" and a.weights and not Path(a.weights).is_file():
        raise UserError(f"--weights {a.weights}: no such file")
    if a.action == "train" and a.epochs is not None and a.epochs < 1:
        raise UserError("gansweep classifier train: --epochs must be >= 1")
    if a.action == "check" and a.n is not None and a.n < 2:
        raise UserError(f"gansweep classifier check: --n must be >= 2, got {a.n}")
    mnist = load_mnist(a.data_root, a.download)
    if a.action == "check":
        weights = Path(a.weights) if a.weights else None
        scorer, _ = build_scorer(mnist.test_images, weights=weights)
        acc = accuracy(scorer.classifier, to_model_space(mnist.test_images), mnist.test_labels)
        rows = check_scorer(scorer, mnist, a.n or CHECK_N)
        print(f"classifier {weights or WEIGHTS_PATH}\nsha256 {scorer.classifier_sha256}\n"
              f"test accuracy {acc:.2%}; digit test: top probability >= {scorer.digit_threshold:.4f}")
        print(format_check(rows))
        if a.json:
            doc = {"weights": str(weights or WEIGHTS_PATH), "sha256": scorer.classifier_sha256,
                   "test_accuracy": acc, "digit_threshold": scorer.digit_threshold, "sets": rows}
            write_atomic(Path(a.json), lambda p: Path(p).write_text(json.dumps(doc, indent=2)))
        return 0
    out = Path(a.out) if a.out else WEIGHTS_PATH
    acc, sha, threshold = train_and_pin(mnist, out, a.epochs or TRAIN_EPOCHS)
    print(f"test accuracy {acc:.4%}; wrote {out}\nsha256 {sha}\ndigit threshold {threshold!r}\n"
          "(to pin them, set WEIGHTS_SHA256 and DIGIT_THRESHOLD in models/classifier.py)")
    return 0
