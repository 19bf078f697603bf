"""The analysis package on synthetic results tables with known values."""
import html as html_module
import itertools
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import figures
from analysis.load import Run
from analysis.report import build_report
from analysis.stats import (I_PRIME_EDGES, budget_table, ebgan_vs_gan_tests, expected_best_of_k,
                            figure2_counts, mann_whitney, stability_table)
from helpers import gansweep, make_run, row

REPO = Path(__file__).resolve().parents[1]


def synthetic() -> pd.DataFrame:
    rows = [
        # GAN, sub-grid adam/adam/0.001: I' 0.2, 0.7, 3.1 (nLayerG 5), one diverged, one error
        row("gan", 0.2, nLayerG=2), row("gan", 0.7, nLayerG=3), row("gan", 3.1, nLayerG=5),
        row("gan", 0, status="diverged", nLayerG=4), row("gan", 0, status="error", nLayerD=3),
        # GAN, sub-grid sgd/sgd/0.01: 0.1, 0.1 and one pending
        row("gan", 0.1, optimD="sgd", optimG="sgd", lr=0.01),
        row("gan", 0.1, optimD="sgd", optimG="sgd", lr=0.01, nLayerD=4),
        row("gan", 0, status="pending", optimD="sgd", optimG="sgd", lr=0.01, nLayerD=5),
        # EBGAN: 2.2, 2.4, 5.0 (nLayerD 5), 15.0 (past the last edge)
        row("ebgan", 2.2), row("ebgan", 2.4, nLayerG=3), row("ebgan", 5.0, nLayerD=5),
        row("ebgan", 15.0, nLayerG=4, nLayerD=4),
    ]
    return pd.DataFrame(rows)


def counts_of(table, panel, model):
    t = table[(table.panel.str.startswith(panel)) & (table.model == model)]
    return dict(zip(t.bin_lo, t["count"]))


def test_figure2_bin_counts():
    t = figure2_counts(synthetic())
    assert len(I_PRIME_EDGES) == 29  # 0, 0.5, ..., 14
    gan_a = counts_of(t, "(a)", "gan")
    # finished GAN runs: 0.2, 0.7, 3.1, diverged (0), 0.1, 0.1 -> bins 0: 4, 0.5: 1, 3.0: 1
    assert {k: v for k, v in gan_a.items() if v} == {0.0: 4, 0.5: 1, 3.0: 1}
    gan_b = counts_of(t, "(b)", "gan")  # nLayerG 5 gone
    assert {k: v for k, v in gan_b.items() if v} == {0.0: 4, 0.5: 1}
    gan_c = counts_of(t, "(c)", "gan")  # also the diverged nLayerG 4 and nLayerD 4 runs gone
    assert {k: v for k, v in gan_c.items() if v} == {0.0: 2, 0.5: 1}
    eb_a = counts_of(t, "(a)", "ebgan")
    assert {k: v for k, v in eb_a.items() if v} == {2.0: 2, 5.0: 1, 13.5: 1}  # 15 clipped in
    pct = t[(t.panel.str.startswith("(a)")) & (t.model == "ebgan")]["percent"]
    assert pct.sum() == pytest.approx(100.0) and pct.max() == pytest.approx(50.0)


def test_figure2_panels_draw_those_percentages():
    fig = figures.figure2(Run.of_tables(synthetic(), real_i_prime=13.3))
    assert len(fig.axes) == 3
    ax_a = fig.axes[0]
    steps = [p for p in ax_a.patches if p.get_fill()]
    heights = {tuple(np.round(p.get_data().values, 6)) for p in steps}
    gan_expected = np.zeros(28)
    gan_expected[[0, 1, 6]] = [4 / 6 * 100, 1 / 6 * 100, 1 / 6 * 100]
    assert tuple(np.round(gan_expected, 6)) in heights
    assert [t.get_text() for t in ax_a.get_legend().get_texts()] == ["GAN (n=6)", "EBGAN (n=4)"]
    assert all(np.array_equal(p.get_data().edges, I_PRIME_EDGES) for ax in fig.axes for p in ax.patches)


def test_figure3_one_panel_per_gan_subgrid():
    fig = figures.figure3(Run.of_tables(synthetic()))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["optimD adam, optimG adam, lr 0.001  (n=5)", "optimD sgd, optimG sgd, lr 0.01  (n=3)"]
    # each panel carries the EBGAN reference outline (unfilled) beside the GAN histogram
    for ax in fig.axes:
        if ax.get_visible():
            assert sum(not p.get_fill() for p in ax.patches) >= 1


def test_stability_table_numbers():
    s = stability_table(synthetic()).set_index("group")
    gan = s.loc["GAN"]
    assert (gan.runs, gan.finished, gan.diverged, gan.errored, gan.pending) == (8, 6, 1, 1, 1)
    # finished GAN scores: 0.2, 0.7, 3.1, 0 (diverged), 0.1, 0.1
    assert gan.i_prime_median == pytest.approx(0.15)
    assert gan.i_prime_q1 == pytest.approx(np.quantile([0, .1, .1, .2, .7, 3.1], 0.25))
    assert gan.failure_share == pytest.approx(5 / 6)
    assert gan.is_median == pytest.approx(1.2)  # 1 + median of ok scores (0.2, 0.7, 3.1, 0.1, 0.1)
    eb = s.loc["EBGAN"]
    assert (eb.runs, eb.finished, eb.failure_share, eb.i_prime_median) == (4, 4, 0.0, pytest.approx(3.7))
    sub = s.loc["GAN D:sgd G:sgd lr 0.01"]
    assert (sub.runs, sub.finished, sub.pending) == (3, 2, 1)


def test_mann_whitney_by_hand():
    # x all below y: U = 0; mean 4.5, var 3*3/12*7 = 5.25, z = (4.5 - 0.5)/sqrt(5.25)
    u, p = mann_whitney([1, 2, 3], [4, 5, 6])
    assert u == 0
    assert p == pytest.approx(math.erfc(4.0 / math.sqrt(5.25) / math.sqrt(2)))
    assert mann_whitney([1, 2, 3], [1, 2, 3])[1] == pytest.approx(1.0)
    t = ebgan_vs_gan_tests(synthetic())
    assert t.iloc[0]["comparison"] == "EBGAN vs GAN" and t.iloc[0]["n_a"] == 4 and t.iloc[0]["n_b"] == 6
    # pairs an EBGAN run wins: 2.2 and 2.4 beat 5 of the 6 GAN scores (not 3.1), 5.0 and 15 beat all 6
    assert t.iloc[0]["prob_a_beats_b"] == pytest.approx(22 / 24)


def test_budget_curve_equals_brute_force():
    x = [0.3, 2.0, 0.0, 5.5, 1.1, 1.1]
    got = expected_best_of_k(x)
    for k in range(1, 7):
        combos = list(itertools.combinations(x, k))
        assert got[k - 1] == pytest.approx(np.mean([max(c) for c in combos]))
    assert got[0] == pytest.approx(np.mean(x)) and got[-1] == pytest.approx(5.5)
    b = budget_table(synthetic())
    assert len(b) == 6 + 4 and b[b.model == "ebgan"]["expected_best_i_prime"].iloc[-1] == 15.0


def test_report_files_and_contents(tmp_path):
    run = make_run(tmp_path, synthetic())
    out = build_report(run)
    html = out.read_text()
    assert out == run / "report" / "report.html"
    for name in ("figure2", "models", "figure3", "figure4", "best_epoch", "budget", "curves"):
        assert (run / "report" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f'<figure id="{name}"><img' in html
    assert html.count("data:image/png;base64,") == 7 and "http" not in html.replace("http-equiv", "")
    assert not (run / "report" / "margin.png").exists()  # no D(x) / D(G(z)) in these curves
    for cls in ("best", "stability", "tests", "settings"):
        assert f'<table class="{cls}">' in html
    assert "10 of 12 trials finished (ok 9, diverged 1); errored 1, pending 1" in html
    stab = pd.read_csv(run / "report" / "stability.csv")
    assert list(stab.group) == ["GAN", "EBGAN", "GAN D:adam G:adam lr 0.001", "GAN D:sgd G:sgd lr 0.01"]
    counts = pd.read_csv(run / "report" / "figure2_counts.csv")
    assert len(counts) == 3 * 2 * 28


def test_report_command_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = gansweep("report", empty, cwd=REPO)
    assert r.returncode == 2 and "not a gansweep run directory" in r.stderr
    run = make_run(tmp_path, synthetic(), "nores")
    (run / "results.parquet").write_bytes(b"garbage")
    r = gansweep("report", run, cwd=REPO)
    assert r.returncode == 2 and "unreadable results table" in r.stderr and "Traceback" not in r.stderr


def test_partial_sweep_still_reports(tmp_path):
    df = synthetic()
    ebgan = df.family == "ebgan"
    df.loc[ebgan, ["status", "tune_status", "epochs_done"]] = ["pending", "PENDING", 0]
    df.loc[ebgan, ["i_prime", "inception_score", "fid", "classes_covered"]] = math.nan
    run = make_run(tmp_path, df, "partial")
    html = build_report(run).read_text()
    assert "6 of 12 trials finished" in html
    assert '<p class="partial" id="partial"><b>Partial run</b>: 6 of 12 grid points' in html
    whole = synthetic().query("status in ['ok', 'diverged']").reset_index(drop=True)
    assert 'id="partial"' not in build_report(make_run(tmp_path, whole, "whole")).read_text()


def test_report_refuses_tables_that_break_the_ledger(tmp_path):
    """What an interrupted sweep used to write: a point stopped after 1 of its 2 epochs, `ok`."""
    df = synthetic()
    df.loc[0, "epochs_done"] = 1
    run = make_run(tmp_path, df, "lying")
    r = gansweep("report", run, cwd=REPO)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "1 ok row(s) did not train every epoch: gan-G2x400-D2x128-nodrop-adam.adam-lr0.001-s0" in r.stderr
    assert "--check" in r.stderr and not (run / "report").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    run = make_run(tmp_path, synthetic())
    out = build_report(run)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", out.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in ("figure2", "models", "figure3", "figure4", "best_epoch", "budget", "curves"):
        assert f'id="{name}"' in dom.stdout
    assert dom.stdout.count("<table") == 5  # best, stability, tests, convergence, settings
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1400,3000", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120, check=True)
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)  # (3000, 1400, 3|4) floats in [0, 1]
    assert img.shape[0] == 3000 and img.shape[1] == 1400
    dark = (img[..., :3].mean(axis=2) < 0.5).mean()
    assert dark > 0.01  # figures and text were drawn, not a blank page

    # In a 1,280-px window every table's box stays inside the page: a table wider than that (the
    # stability table's 15 columns) scrolls inside its box, its header row and first column held.
    # A copy of the page measures its own layout and writes it into the DOM that Chromium dumps.
    probe = out.with_name("probe.html")
    probe.write_text(out.read_text().replace("</body>", """<script>
      const boxes = [...document.querySelectorAll('.table-box')].map(b => {
        const r = b.getBoundingClientRect(), t = b.querySelector('table');
        return [t.className, Math.round(r.left), Math.round(r.right), b.scrollWidth, b.clientWidth,
                getComputedStyle(b.querySelector('th')).position,
                getComputedStyle(b.querySelector('td, th')).position];
      });
      document.body.setAttribute('data-layout', JSON.stringify({width: window.innerWidth, boxes}));
    </script></body>"""))
    dom = subprocess.run([CHROMIUM, *flags, "--window-size=1280,900", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    layout = json.loads(html_module.unescape(re.search(r'data-layout="([^"]*)"', dom.stdout).group(1)))
    assert layout["width"] == 1280 and len(layout["boxes"]) == 5
    for cls, left, right, scroll_w, client_w, th_pos, first_pos in layout["boxes"]:
        assert 0 <= left and right <= 1280, (cls, left, right)  # the box is no wider than the window
        assert th_pos == "sticky" and first_pos == "sticky", cls  # header row and first column held
    stability = next(b for b in layout["boxes"] if b[0] == "stability")
    assert stability[3] > stability[4]  # wider than its box at 1,280 px: it scrolls, inside the box


def test_began_runs_get_their_histogram_test_and_m_global_curves(tmp_path):
    df = pd.concat([synthetic(), pd.DataFrame([row("began", 4.0), row("began", 6.0, nLayerG=3)])],
                   ignore_index=True)
    run = make_run(tmp_path, df, "began")
    curves = pd.read_parquet(run / "curves.parquet")
    began_ids = set(df.loc[df.family == "began", "point_id"])
    curves["m_global"] = [0.3 / r.epoch if r.point_id in began_ids else math.nan for r in curves.itertuples()]
    curves.to_parquet(run / "curves.parquet")
    html = build_report(run).read_text()
    assert '<figure id="m_global"><img' in html and (run / "report" / "m_global.png").exists()
    tests = pd.read_csv(run / "report" / "tests.csv").set_index("comparison")
    assert tests.loc["BEGAN vs GAN", "n_a"] == 2 and tests.loc["BEGAN vs GAN", "prob_a_beats_b"] == 1.0
    counts = figure2_counts(df)
    began_a = counts[(counts.panel.str.startswith("(a)")) & (counts.model == "began")]
    assert dict(zip(began_a.bin_lo[began_a["count"] > 0], began_a["count"][began_a["count"] > 0])) == {4.0: 1, 6.0: 1}


def with_dcgan() -> pd.DataFrame:
    """synthetic() plus DCGAN runs: GAN 0.4 and 6.2 (sub-grid adam/adam/0.0002), EBGAN 7.0,
    7.5 and a diverged one, BEGAN 3.3."""
    extra = [row("gan", 0.4, arch="dcgan", lr=0.0002), row("gan", 6.2, arch="dcgan", lr=0.0002, nLayerG=4),
             row("ebgan", 7.0, arch="dcgan"), row("ebgan", 7.5, arch="dcgan", nLayerD=4),
             row("ebgan", 0, status="diverged", arch="dcgan", nLayerG=6),
             row("began", 3.3, arch="dcgan")]
    return pd.concat([synthetic(), pd.DataFrame(extra)], ignore_index=True)


def test_dcgan_runs_are_their_own_models_everywhere():
    df = with_dcgan()
    t = figure2_counts(df)
    assert list(dict.fromkeys(t.model)) == ["gan", "gan-dcgan", "ebgan", "ebgan-dcgan", "began-dcgan"]
    assert {k: v for k, v in counts_of(t, "(a)", "ebgan-dcgan").items() if v} == {0.0: 1, 7.0: 1, 7.5: 1}
    assert {k: v for k, v in counts_of(t, "(b)", "ebgan-dcgan").items() if v} == {7.0: 1, 7.5: 1}
    # the paper's GAN keeps exactly its own runs
    assert {k: v for k, v in counts_of(t, "(a)", "gan").items() if v} == {0.0: 4, 0.5: 1, 3.0: 1}
    s = stability_table(df).set_index("group")
    assert list(s.index) == ["GAN", "GAN (DCGAN)", "EBGAN", "EBGAN (DCGAN)", "BEGAN (DCGAN)",
                             "GAN D:adam G:adam lr 0.001", "GAN D:sgd G:sgd lr 0.01",
                             "GAN (DCGAN) D:adam G:adam lr 0.0002"]
    eb = s.loc["EBGAN (DCGAN)"]
    assert (eb.runs, eb.finished, eb.diverged, eb.i_prime_median) == (3, 3, 1, pytest.approx(7.0))
    assert eb.failure_share == pytest.approx(1 / 3)
    tests = ebgan_vs_gan_tests(df).set_index("comparison")
    assert list(tests.index) == ["EBGAN vs GAN", "EBGAN (DCGAN) vs GAN (DCGAN)",
                                 "BEGAN (DCGAN) vs GAN (DCGAN)", "GAN (DCGAN) vs GAN",
                                 "EBGAN (DCGAN) vs EBGAN"]
    # EBGAN-DCGAN {7, 7.5, 0} vs GAN-DCGAN {0.4, 6.2}: 7 and 7.5 win both, 0 loses both -> 4 of 6
    assert tests.loc["EBGAN (DCGAN) vs GAN (DCGAN)", "prob_a_beats_b"] == pytest.approx(4 / 6)
    assert tests.loc["BEGAN (DCGAN) vs GAN (DCGAN)", "prob_a_beats_b"] == pytest.approx(1 / 2)
    assert tests.loc["EBGAN (DCGAN) vs EBGAN", "n_b"] == 4
    b = budget_table(df)
    assert b[b.model == "gan-dcgan"]["expected_best_i_prime"].tolist() == pytest.approx([3.3, 6.2])
    # Figure 2 overlays the paper's fully-connected models; every model gets its own panel
    fig = figures.figure2(Run.of_tables(df))
    legend = [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
    assert legend == ["GAN (n=6)", "EBGAN (n=4)"]
    panels = [ax for ax in figures.models_figure(Run.of_tables(df)).axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [
        "GAN (n=6)\nmedian 0.15, 83% below 1", "GAN (DCGAN) (n=2)\nmedian 3.30, 50% below 1",
        "EBGAN (n=4)\nmedian 3.70, 0% below 1", "EBGAN (DCGAN) (n=3)\nmedian 7.00, 33% below 1",
        "BEGAN (DCGAN) (n=1)\nmedian 3.30, 0% below 1"]
    # 5 panels, 4 a row: x labels under each column's last panel (three of them in the top row)
    assert [bool(ax.get_xlabel()) for ax in panels] == [False, True, True, True, True]
    # each panel: the model filled, its reference outlined (GAN -> EBGAN, others -> GAN, same arch)
    refs = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in panels]
    assert refs == [["GAN", "EBGAN"], ["GAN (DCGAN)", "EBGAN (DCGAN)"], ["EBGAN", "GAN"],
                    ["EBGAN (DCGAN)", "GAN (DCGAN)"], ["BEGAN (DCGAN)", "GAN (DCGAN)"]]
    filled = [p for p in panels[3].patches if p.get_fill()]
    assert [tuple(np.round(p.get_data().values[[0, 14, 15]], 4)) for p in filled] == [(33.3333, 33.3333, 33.3333)]
    titles = [ax.get_title() for ax in figures.figure3(Run.of_tables(df)).axes if ax.get_visible()]
    assert titles[-1] == "GAN (DCGAN)\noptimD adam, optimG adam, lr 0.0002  (n=2)" and len(titles) == 3
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else None
               for ax in figures.figure3(Run.of_tables(df)).axes if ax.get_visible()]
    assert legends == [["GAN", "EBGAN"], None, ["GAN (DCGAN)", "EBGAN (DCGAN)"]]
    assert list(figures.best_runs(df).index) == ["gan", "gan-dcgan", "ebgan", "ebgan-dcgan", "began-dcgan"]


def test_tables_from_before_the_arch_axis_read_as_mlp(tmp_path):
    """And from before d_batch: their GANs trained on separate batches (LEGACY_DEFAULTS)."""
    df = synthetic().drop(columns=["arch", "d_batch"])
    run = make_run(tmp_path, df, "old")
    html = build_report(run).read_text()
    assert "GAN: median I&#x27; 0.15" in html or "GAN: median I' 0.15" in html
    assert list(pd.read_csv(run / "report" / "stability.csv").group)[:2] == ["GAN", "EBGAN"]
    assert "D&#x27;s batch norm (d_batch): separate for GAN, EBGAN." in html
    new = build_report(make_run(tmp_path, synthetic(), "new")).read_text()
    assert "D&#x27;s batch norm (d_batch): joint for GAN; separate for EBGAN." in new
    # a kept G of such a run is found by its row's id (today's id of that config says -sepbn)
    import torch

    from analysis.load import load_run
    from sweep.train.point import build_models

    loaded = load_run(run)
    gan_id = df.loc[df.family == "gan", "point_id"].iloc[0]
    cfg = loaded.config(gan_id)
    assert cfg.d_batch == "separate" and cfg.point_id == gan_id.replace("-s0", "-sepbn-s0")
    (run / "weights").mkdir()
    torch.save(build_models(cfg, torch.device("cpu"))[1].state_dict(), run / "weights" / f"{gan_id}.pt")
    assert loaded.generator(gan_id) is not None


# --------------------------------------------------------------------------- the digit test
def with_digit_shares() -> pd.DataFrame:
    """synthetic() scored with the digit test. GAN: the 3.1 run draws noise (0.05), the 0.7 run
    digits (0.8), the rest nothing (0.0). EBGAN: 2.2 -> 0.9, 2.4 -> 0.95, 5.0 -> 0.3, 15.0 -> 0.6."""
    df = synthetic()
    share = {("gan", 0.7): 0.8, ("gan", 3.1): 0.05, ("ebgan", 2.2): 0.9, ("ebgan", 2.4): 0.95,
             ("ebgan", 5.0): 0.3, ("ebgan", 15.0): 0.6}
    df["digit_share"] = [share.get((r.family, r.i_prime), 0.0) if r.status == "ok" else math.nan
                         for r in df.itertuples()]
    return df


def test_best_runs_are_runs_that_draw_digits():
    best = figures.best_runs(with_digit_shares())
    assert best.loc["gan", "i_prime"] == 0.7  # not the 3.1 noise run
    assert best.loc["ebgan", "i_prime"] == 15.0
    df = with_digit_shares()
    df.loc[df.family == "ebgan", "digit_share"] = 0.2
    assert list(figures.best_runs(df).index) == ["gan"]
    fig = figures.figure4(Run.of_tables(df))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["GAN", "EBGAN"]
    assert "digit_share 0.80" in panels[0].get_title()
    texts = [t.get_text() for t in panels[1].texts]
    assert texts == ["no run draws digits:\nnone of 4 ok runs has\ndigit_share >= 0.5; the highest is 0.20"]
    assert "among runs with digit_share >= 0.5" in fig.get_suptitle()


def test_histograms_count_and_hatch_non_digit_runs():
    df = with_digit_shares()
    t = figure2_counts(df)
    gan = t[(t.panel.str.startswith("(a)")) & (t.model == "gan")]
    # non-digit ok GAN runs: 0.2, 0.1, 0.1 (bin 0) and 3.1 (bin 3.0); the diverged one is not counted
    assert {r.bin_lo: r.non_digit_count for r in gan.itertuples() if r.non_digit_count} == {0.0: 3, 3.0: 1}
    eb = t[(t.panel.str.startswith("(a)")) & (t.model == "ebgan")]
    assert {r.bin_lo: r.non_digit_count for r in eb.itertuples() if r.non_digit_count} == {5.0: 1}
    fig = figures.figure2(Run.of_tables(df))
    hatched = [p for p in fig.axes[0].patches if p.get_hatch() == "xxxx"]
    expected = np.zeros(28)
    expected[[0, 6]] = [3 / 6 * 100, 1 / 6 * 100]  # percent of the GAN's 6 finished runs
    assert any(np.allclose(p.get_data().values, expected) for p in hatched)
    assert len(hatched) == 2  # GAN and EBGAN
    legend = [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
    assert legend == ["GAN (n=6)", "EBGAN (n=4)", "of which non-digit runs (digit_share < 0.5)"]
    # tables without digit_share hatch nothing
    assert not any(p.get_hatch() == "xxxx" for p in figures.figure2(Run.of_tables(synthetic())).axes[0].patches)
    assert (figure2_counts(synthetic())["non_digit_count"] == 0).all()


def test_stability_table_digit_columns():
    s = stability_table(with_digit_shares()).set_index("group")
    # GAN ok runs' shares 0, 0.8, 0.05, 0, 0; 1 of 6 finished runs draws digits
    assert s.loc["GAN", "digit_share_median"] == 0.0
    assert s.loc["GAN", "draws_digits_share"] == pytest.approx(1 / 6)
    assert s.loc["EBGAN", "digit_share_median"] == pytest.approx(0.75)
    assert s.loc["EBGAN", "draws_digits_share"] == pytest.approx(3 / 4)
    assert s.loc["GAN D:adam G:adam lr 0.001", "draws_digits_share"] == pytest.approx(1 / 4)
    old = stability_table(synthetic())  # scored before the digit test: unknown, not zero
    assert old["digit_share_median"].isna().all() and old["draws_digits_share"].isna().all()


def test_report_shows_digit_shares(tmp_path):
    run = make_run(tmp_path, with_digit_shares(), "digits")
    html = build_report(run).read_text()
    assert "GAN: median I&#x27; 0.15, 83% of 6 finished runs below 1, 17% draw digits" in html
    best = html.split('<table class="best">')[1].split("</table>")[0]
    assert "<th>classes covered</th><th>digit share</th></tr>" in best
    rows = [r.split("<td>")[1:] for r in best.split("<tr>")[2:]]  # model, point_id, i_prime, ...
    # formatted for reading: I' with 2 decimals, shares as percentages
    assert [(r[0].split("<")[0], r[2].split("<")[0], r[-1].split("<")[0]) for r in rows] == \
        [("gan", "0.70", "80%"), ("ebgan", "15.00", "60%")]


def test_report_refuses_rows_of_two_classifiers(tmp_path):
    df = with_digit_shares()
    df["classifier_sha256"] = ["a" * 64] * 5 + ["b" * 64] * (len(df) - 5)
    run = make_run(tmp_path, df, "mixed")
    r = gansweep("report", run, cwd=REPO)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "2 different classifiers (aaaaaaaaaaaa... 5 rows, bbbbbbbbbbbb... 7 rows)" in r.stderr
    assert not (run / "report").exists()
    df["classifier_sha256"] = "a" * 64  # one classifier: reported
    run = make_run(tmp_path, df, "single")
    assert build_report(run).exists()


def test_convergence_and_margin_tables_by_hand(tmp_path):
    """Convergence: per model, its median I' at the last two epochs and the share of ok runs
    still rising > 10%. Margin: per (norm, m, dropout variant), last-epoch D(x) against m."""
    from analysis.figures import relative_axis
    from analysis.stats import convergence_table, last_rise, margin_table, median_curves

    rows = [row("ebgan", 2.1), row("ebgan", 2.0, nLayerG=3), row("ebgan", 0.0, nLayerG=4),
            row("ebgan", 0.0, status="diverged", nLayerG=5), row("gan", 1.0)]
    df = pd.DataFrame(rows)
    df.loc[df.nLayerG == 4, "margin"] = 5.0  # another margin, with its own point id
    df.loc[df.nLayerG == 4, "point_id"] = "ebgan-m5"
    df["epochs"], df["epochs_done"] = 3, [3, 3, 3, 1, 3]
    ids = list(df.point_id)
    # I' per epoch: +5%, +33%, 0 -> 0, diverged, GAN +100%; D(x), D(G(z)) per epoch for EBGANs
    curves = pd.DataFrame(
        [{"point_id": ids[0], "epoch": e, "i_prime": v, "d_real": dr, "d_fake": 11.0}
         for e, v, dr in ((1, 1.0, 14.0), (2, 2.0, 12.0), (3, 2.1, 8.0))] +
        [{"point_id": ids[1], "epoch": e, "i_prime": v, "d_real": dr, "d_fake": 10.0}
         for e, v, dr in ((1, 1.0, 14.0), (2, 1.5, 13.0), (3, 2.0, 12.0))] +
        [{"point_id": ids[2], "epoch": e, "i_prime": 0.0, "d_real": 3.0, "d_fake": 4.0} for e in (1, 2, 3)] +
        [{"point_id": ids[3], "epoch": 1, "i_prime": 0.5, "d_real": 9.0, "d_fake": 9.0}] +
        [{"point_id": ids[4], "epoch": e, "i_prime": v, "d_real": 0.1, "d_fake": -2.0}
         for e, v in ((1, 0.25), (2, 0.5), (3, 1.0))])
    rise = last_rise(curves, df)
    assert rise.loc[ids[0]] == pytest.approx(0.05) and rise.loc[ids[1]] == pytest.approx(1 / 3)
    assert rise.loc[ids[2]] == 0.0 and ids[3] not in rise.index and rise.loc[ids[4]] == pytest.approx(1.0)
    med = median_curves(curves, df)
    eb = med[med.model == "ebgan"]
    assert list(eb.epoch) == [1, 2, 3] and list(eb.runs) == [3, 3, 3]
    assert list(eb.median_i_prime) == [1.0, 1.5, 2.0]  # medians of (1, 1, 0), (2, 1.5, 0), (2.1, 2, 0)
    conv = convergence_table(curves, df).set_index("model")
    assert list(conv.index) == ["GAN", "EBGAN"]
    e = conv.loc["EBGAN"]
    assert (e.ok_runs, e.epochs, e.steps) == (3, 3, 3 * (60000 // 64))
    assert (e.median_before, e.median_last) == (1.5, 2.0) and e.median_rise == pytest.approx(1 / 3)
    assert e.still_rising_share == pytest.approx(1 / 3)  # only the +33% run
    assert conv.loc["GAN"].still_rising_share == 1.0

    m = margin_table(df, curves)
    assert list(zip(m.margin, m.variant, m.runs)) == [(5.0, "no dropout", 1), (10.0, "no dropout", 3)]
    ten = m[m.margin == 10.0].iloc[0]
    # finished runs at m = 10: last D(x) 8, 12 (ok) and 9 (diverged after epoch 1); I' 2.1, 2.0, 0
    assert (ten.d_real_median, ten.d_fake_median) == (9.0, 10.0)
    assert ten.real_below_margin_share == pytest.approx(2 / 3)
    assert (ten.i_prime_median, ten.failure_share) == (2.0, pytest.approx(1 / 3))
    five = m[m.margin == 5.0].iloc[0]
    assert (five.d_real_median, five.real_below_margin_share, five.i_prime_median) == (3.0, 1.0, 0.0)
    run = make_run(tmp_path, df, "margins")
    curves.to_parquet(run / "curves.parquet")
    html = build_report(run).read_text()
    for name in ("margin", "margin_hist"):
        assert (run / "report" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "Still rising by more than 10% over the last third of their epochs: GAN 100%" in html
    assert pd.read_csv(run / "report" / "convergence.csv").shape == (2, 9)
    # the relative axis: 0.52 and 0.98 of the real test set's I' land in bins 13 and 24 of 30
    counts, _ = relative_axis(13.3).bin([0.52 * 13.3, 0.98 * 13.3])
    assert len(counts) == 30 and counts[13] == 1 and counts[24] == 1 and counts.sum() == 2
    assert build_report(run, relative=True).exists()


def test_the_convergence_measure_sees_the_last_third_of_the_budget_not_the_last_interval():
    """A curve still climbing, scored every epoch: 1.0, 1.5, 2.0, 2.4, 2.6, 2.7. Over its last epoch it
    rose 3.8% (read as levelled before issue 42); over the last third of its 6 epochs, from epoch 4, it
    rose 12.5%: still rising. A flat tail stays levelled; scored every 2 epochs, the reference is epoch 4."""
    from analysis.stats import convergence_table, last_rise, reference_epoch

    assert [reference_epoch(e) for e in ([1, 2, 3], [1, 2, 3, 4, 5, 6], [2, 4, 6], [1, 2], [3, 9], [5])] == \
        [2, 4, 4, 1, 3, 5]
    df = pd.DataFrame([row("gan", 2.7, nLayerG=3), row("gan", 2.0, nLayerG=4)])
    df["epochs"], df["epochs_done"] = 6, 6
    climbing, flat = df.point_id
    curves = pd.DataFrame(
        [{"point_id": climbing, "epoch": e, "i_prime": v} for e, v in enumerate((1.0, 1.5, 2.0, 2.4, 2.6, 2.7), 1)]
        + [{"point_id": flat, "epoch": e, "i_prime": v} for e, v in enumerate((1.0, 1.8, 2.0, 2.0, 2.0, 2.0), 1)])
    rise = last_rise(curves, df)
    assert rise.loc[climbing] == pytest.approx(0.3 / 2.4) and rise.loc[flat] == 0.0
    conv = convergence_table(curves, df).iloc[0]
    # medians per epoch: 1.0, 1.65, 2.0, 2.2, 2.3, 2.35; from epoch 4: 2.2 -> 2.35
    assert (conv.epoch_before, conv.epochs) == (4, 6)
    assert (conv.median_before, conv.median_last) == pytest.approx((2.2, 2.35))
    assert conv.still_rising_share == 0.5


def test_the_convergence_measure_reads_the_budget_studys_learning_gans_as_still_rising():
    """The gan-budget study's I' (docs/reproduction.md, scored at these epochs of 156 steps) cut at
    6,240 steps, paper-sample's budget: the four GANs that climb rose 19-35% over the last third
    (from epoch 24, 3,744 steps) and are still rising, although over 1,248 steps before 6,240 they
    rose 3-12%; the one that oscillates fell, the six that never start stay at 0: not rising.
    paper-sample's EBGAN median (levelled: +9.5% over its last third) reads as levelled."""
    from analysis.stats import STILL_RISING, convergence_table, last_rise

    epochs = (4, 12, 16, 24, 32, 40)
    budget = {  # G, D, optimizers, lr: I' at each epoch above
        "G4x1600 D4x512 SGD/Adam 1e-4": (0.16, 1.54, 2.75, 3.58, 4.33, 4.83),
        "G5x1600 D3x1024 Adam/SGD 0.01": (0.00, 0.71, 1.44, 2.34, 2.93, 3.01),
        "G3x400 D4x128 Adam/Adam 1e-4": (0.03, 1.28, 1.93, 2.04, 2.66, 2.51),
        "G2x800 D3x1024 Adam/SGD 0.01": (0.00, 1.01, 1.51, 1.80, 2.05, 2.14),
        "G4x400 D2x256 Adam/Adam 1e-4": (0.11, 0.37, 0.98, 1.36, 1.51, 0.95),
        **{f"never starts {i}": (0.0,) * 6 for i in range(6)}}
    df = pd.DataFrame([row("gan", v[-1], nLayerG=2 + i % 4, sizeG=100 + i) for i, v in enumerate(budget.values())])
    df["epochs"], df["epochs_done"], df["n_train"], df["batch_size"] = 40, 40, 10000, 64
    pid = dict(zip(budget, df.point_id))
    curves = pd.DataFrame([{"point_id": pid[k], "epoch": e, "i_prime": x}
                           for k, v in budget.items() for e, x in zip(epochs, v)])
    rise = last_rise(curves, df).rename(index={p: k for k, p in pid.items()})
    assert rise["G4x1600 D4x512 SGD/Adam 1e-4"] == pytest.approx(4.83 / 3.58 - 1)  # +35%
    assert rise["G2x800 D3x1024 Adam/SGD 0.01"] == pytest.approx(2.14 / 1.80 - 1)  # +19%
    rising = sorted(k for k in budget if rise[k] > STILL_RISING)
    assert rising == sorted(list(budget)[:4])
    assert rise["G4x400 D2x256 Adam/Adam 1e-4"] < 0 and all(rise[f"never starts {i}"] == 0.0 for i in range(6))
    conv = convergence_table(curves, df).iloc[0]
    assert (conv.steps, conv.epoch_before, conv.epochs) == (6240, 24, 40)
    assert conv.still_rising_share == pytest.approx(4 / 11)
    # paper-sample's EBGAN median by epoch (every 4): from epoch 24 (6.19) to 40 (6.78), +9.5%: levelled
    eb = pd.DataFrame([row("ebgan", 6.78)])
    eb["epochs"], eb["epochs_done"] = 40, 40
    med = (2.48, 3.91, 4.44, 5.34, 5.50, 6.19, 6.72, 6.38, 6.49, 6.78)
    eb_curves = pd.DataFrame([{"point_id": eb.point_id[0], "epoch": 4 * (i + 1), "i_prime": v} for i, v in enumerate(med)])
    eb_rise = last_rise(eb_curves, eb).iloc[0]
    assert eb_rise == pytest.approx(6.78 / 6.19 - 1) and eb_rise < STILL_RISING
