"""gansweep compare: two runs' histograms, shares and tests per model, on hand-set tables."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.compare import compare_figure, compare_table, differing_settings, runs_sides
from analysis.stats import I_PRIME_EDGES, mann_whitney, with_models
from helpers import REPO, gansweep, make_run, row

A_GAN, B_GAN = [0.0, 0.0, 0.0, 0.5], [0.0, 1.5, 2.5, 3.0]
B_DIGITS = [0.0, 0.6, 0.7, 0.4]


def two_runs(tmp_path):
    """A: GANs with separate batches, all failing; B: the same points with joint batches. Both
    hold the same two EBGAN runs (separate, their family's choice)."""
    ebgan = [row("ebgan", 2.0, nLayerG=2), row("ebgan", 3.0, nLayerG=3)]
    a = pd.DataFrame([row("gan", s, nLayerD=d, d_batch="separate") for s, d in zip(A_GAN, (2, 3, 4, 5))] + ebgan)
    b = pd.DataFrame([row("gan", s, nLayerD=d) for s, d in zip(B_GAN, (2, 3, 4, 5))] + ebgan)
    a["digit_share"] = [0.0] * 4 + [0.6, 0.4]
    b["digit_share"] = B_DIGITS + [0.6, 0.4]
    return make_run(tmp_path, a, "separate"), make_run(tmp_path, b, "joint")


def test_the_table_by_hand(tmp_path):
    run_a, run_b = two_runs(tmp_path)
    a, b = (with_models(pd.read_parquet(r / "results.parquet")) for r in (run_a, run_b))
    t = compare_table(a, b).set_index("model")
    assert list(t.index) == ["GAN", "EBGAN"]
    gan, ebgan = t.loc["GAN"], t.loc["EBGAN"]
    assert gan.settings_changed == "d_batch separate -> joint" and ebgan.settings_changed == ""
    assert (gan.n_a, gan.n_b) == (4, 4)
    assert (gan.median_i_prime_a, gan.median_i_prime_b) == (0.0, 2.0)
    assert (gan.failure_share_a, gan.failure_share_b) == (1.0, 0.25)  # I' < 1: 4 of 4, then 0.0 only
    assert (gan.draws_digits_a, gan.draws_digits_b) == (0.0, 0.5)  # digit_share >= 0.5: 0.6 and 0.7
    assert (gan.median_digit_share_a, gan.median_digit_share_b) == (0.0, 0.5)  # (0.4 + 0.6) / 2
    # B beats A in 13.5 of 16 pairs: 1.5, 2.5 and 3.0 beat all four, B's 0 ties three of A's
    assert gan.prob_b_beats_a == pytest.approx(13.5 / 16)
    # tie-corrected normal approximation: U_A = 2.5, var = 16/12 (9 - 60/56), continuity 0.5
    sd = math.sqrt(16 / 12 * (9 - 60 / 56))
    assert gan.p_value == pytest.approx(math.erfc((5.5 - 0.5) / sd / math.sqrt(2)))
    assert gan.p_value == pytest.approx(mann_whitney(A_GAN, B_GAN)[1])
    assert (ebgan.prob_b_beats_a, ebgan.p_value) == (0.5, 1.0)
    assert differing_settings(a, b) == {"d_batch": ("separate", "joint/separate")}


def test_the_table_within_cells_by_hand(tmp_path, capsys):
    """--within nLayerD: after each model's row, one per cell; the GAN cells hold one run a side."""
    from sweep.cli import main

    run_a, run_b = two_runs(tmp_path)
    a, b = (with_models(pd.read_parquet(r / "results.parquet")) for r in (run_a, run_b))
    t = compare_table(a, b, ("nLayerD",))
    assert list(t["model"]) == ["GAN", "  nLayerD 2", "  nLayerD 3", "  nLayerD 4", "  nLayerD 5", "EBGAN",
                                "  nLayerD 2"]  # row()'s default D depth for both EBGANs
    cells = t.iloc[1:5]
    assert list(cells["median_i_prime_a"]) == A_GAN and list(cells["median_i_prime_b"]) == B_GAN
    assert list(cells["prob_b_beats_a"]) == [0.5, 1.0, 1.0, 1.0]  # 0 ties 0; then B's one beats A's one
    assert list(cells[["n_a", "n_b"]].sum()) == [4, 4]
    assert t.iloc[0]["prob_b_beats_a"] == pytest.approx(13.5 / 16)  # the model's row as without --within
    out = tmp_path / "cmp"
    assert main(["compare", str(run_a), str(run_b), "--within", "nLayerD", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [ln.split()[:3] for ln in printed[3:8]] == [["GAN", "4/4", "0.00"], ["nLayerD", "2", "1/1"],
                                                       ["nLayerD", "3", "1/1"], ["nLayerD", "4", "1/1"],
                                                       ["nLayerD", "5", "1/1"]]
    assert pd.read_csv(out / "compare.csv")["model"].str.strip().tolist()[:2] == ["GAN", "nLayerD 2"]
    assert main(["compare", str(run_a), str(run_b), "--within", "depth"]) == 2
    assert capsys.readouterr().err.strip() == "gansweep: --within depth: 'depth' is not an axis or setting"


def test_the_figure_overlays_a_outlined_on_b_filled(tmp_path):
    run_a, run_b = two_runs(tmp_path)
    a, b = (with_models(pd.read_parquet(r / "results.parquet")) for r in (run_a, run_b))
    fig = compare_figure(a, b, "A", "B")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["GAN", "EBGAN"]
    outline = [p for p in axes[0].patches if p.get_edgecolor()[:3] == (0.0, 0.0, 0.0) and not p.get_fill()]
    want = np.zeros(len(I_PRIME_EDGES) - 1)
    want[0], want[1] = 75.0, 25.0  # A's GANs: three at 0, one at 0.5
    assert len(outline) == 1 and np.allclose(outline[0].get_data().values, want)
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["B: B (n=4)", "A: A (n=4)"]


def test_the_command_writes_the_page_and_prints_the_table(tmp_path):
    run_a, run_b = two_runs(tmp_path)
    r = gansweep("compare", run_a, run_b, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "A: d_batch=separate" and lines[1] == "B: d_batch=joint/separate"
    gan = next(line for line in lines if line.startswith("GAN "))
    assert "4/4" in gan and "0.00 -> 2.00" in gan and "100% -> 25%" in gan and "0% -> 50%" in gan
    assert "d_batch separate -> joint" in gan
    out = run_b / "compare-separate"
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.html", "compare.png"]
    assert len(pd.read_csv(out / "compare.csv")) == 2
    page = (out / "compare.html").read_text()
    assert "<code>d_batch</code>: separate &rarr; joint/separate" in page and "data:image/png;base64," in page


def test_bad_inputs_are_one_line(tmp_path):
    run_a, run_b = two_runs(tmp_path)
    for args, fragment in (((run_a, tmp_path / "nope"), "no such run directory"),
                           ((run_a, run_a), "compare needs two different runs"),
                           ((run_a,), "give RUN_B, or --by SETTING"),
                           ((run_a, "--by", "d_batch"), "needs two values of d_batch; ")):
        r = gansweep("compare", *args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and fragment in r.stderr, r.stderr
    m = json.loads((run_b / "gansweep.json").read_text())
    (run_b / "gansweep.json").write_text(json.dumps({**m, "classifier_sha256": "e" * 64}))
    df = pd.read_parquet(run_b / "results.parquet").assign(classifier_sha256="e" * 64)
    df.to_parquet(run_b / "results.parquet")
    pd.read_parquet(run_a / "results.parquet").assign(classifier_sha256="f" * 64).to_parquet(run_a / "results.parquet")
    with pytest.raises(Exception, match="scored by different classifiers"):
        runs_sides(run_a, run_b)
    assert not (run_b / "compare-separate").exists() and REPO.is_dir()


def test_one_run_split_by_a_setting(tmp_path):
    """--by d_batch=separate,joint: the rows of one run that hold each value, as A and B."""
    run_a, run_b = two_runs(tmp_path)
    both = pd.concat([pd.read_parquet(run_a / "results.parquet").iloc[:4],
                      pd.read_parquet(run_b / "results.parquet")], ignore_index=True)
    both["point_id"] = [p if i >= 4 else p.replace("-s0", "-sepbn-s0") for i, p in enumerate(both.point_id)]
    run = make_run(tmp_path, both, "study")
    r = gansweep("compare", run, "--by", "d_batch=separate,joint", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["A: d_batch=separate", "B: d_batch=joint"]
    gan = next(line for line in lines if line.startswith("GAN "))
    assert "4/4" in gan and "0.00 -> 2.00" in gan and "0.84" in gan  # as the two runs above
    ebgan = next(line for line in lines if line.startswith("EBGAN "))
    assert "2/0" in ebgan  # the EBGANs all hold separate
    assert (run / "compare-d_batch" / "compare.html").is_file()
    r = gansweep("compare", run, "--by", "d_batch=separate,both", cwd=tmp_path)
    assert r.returncode == 2 and "no row of" in r.stderr and "d_batch=both" in r.stderr
    r = gansweep("compare", run, "--by", "epochz", cwd=tmp_path)
    assert r.returncode == 2 and "'epochz' is not a setting" in r.stderr
