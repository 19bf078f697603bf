"""Score a run's kept generators again, drawn another way: what a sampling setting changes.

    gansweep run --preset mini --keep-weights
    gansweep rescore runs/mini-20261124-170000 --sample-bn train

Every ok point with kept G weights (RUN_DIR/weights/) draws its n_eval samples from
its own fixed noise again, with G's batch norm as --sample-bn says, and the same
scorer scores them. Drawn the way the run drew them, the scores are the recorded
ones up to float rounding (the run drew fully-connected Gs as a stacked model: a
check that the weights are the run's); drawn the other way, they measure that
setting alone, with everything else, training included, held fixed.

Writes RUN_DIR/rescore-sample_bn-<mode>.csv: point_id, model, the recorded and the
new scores of each point; prints per model the median I' both ways.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.load import load_run
from models.metric_names import SCORE_KEYS
from models.metrics import ScoreSettings
from sweep.errors import UserError
from sweep.record.results import write_atomic
from sweep.record.schema import OK
from sweep.train.data import load_mnist
from sweep.train.point import draw_samples, eval_noise
from sweep.train.scoring import build_scorer


def rescore(run_dir: Path, sample_bn: str, data_root: str | None = None) -> pd.DataFrame:
    run = load_run(run_dir)
    ok = run.results[run.results["status"] == OK]
    kept = [pid for pid in ok["point_id"] if (run.dir.weights_dir / f"{pid}.pt").is_file()]
    if not kept:
        raise UserError(f"{run.run_dir}: no kept generator weights; run with --keep-weights to rescore")
    scorer, _ = build_scorer(load_mnist(data_root).test_images)
    if scorer.classifier_sha256 != run.manifest["classifier_sha256"]:
        raise UserError(f"{run.run_dir}: scored by another classifier than this one; scores would not compare")
    rows = []
    for _, row in ok[ok["point_id"].isin(kept)].iterrows():
        # the row's id, not cfg.point_id: a table from before a setting existed reads its value as
        # the one it trained with (results.with_legacy_settings), which ids of today may spell
        pid = row["point_id"]
        cfg = run.config(pid).replace(sample_bn=sample_bn)
        samples = draw_samples(run.generator(pid), eval_noise(cfg, "cpu"), cfg)  # (n_eval, 1024)
        new = scorer.score(samples.view(-1, 1, 32, 32), ScoreSettings(eps=cfg.prob_eps,
                                                                       coverage_min_frac=cfg.coverage_min_frac))
        rows.append({"point_id": pid, "model": row["model"], "recorded_sample_bn": row["sample_bn"],
                     **{f"recorded_{k}": row[k] for k in SCORE_KEYS}, "sample_bn": sample_bn,
                     **{k: new[k] for k in SCORE_KEYS}})
    out = pd.DataFrame(rows)
    write_atomic(run.run_dir / f"rescore-sample_bn-{sample_bn}.csv", lambda p: out.to_csv(p, index=False))
    return out


def summary(table: pd.DataFrame) -> str:
    """Per model: runs, median I' as recorded and as rescored, and the median change."""
    lines = [f"{'model':<12} {'runs':>5} {'recorded':>9} {'rescored':>9} {'median change':>14} {'digit_share':>16}"]
    for model, t in table.groupby("model", sort=False):
        lines.append(f"{model:<12} {len(t):>5} {t['recorded_i_prime'].median():>9.3f} {t['i_prime'].median():>9.3f} "
                     f"{(t['i_prime'] - t['recorded_i_prime']).median():>+14.3f} "
                     f"{t['recorded_digit_share'].median():>7.2f} -> {t['digit_share'].median():.2f}")
    return "\n".join(lines)
