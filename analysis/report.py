"""One offline HTML report of a run: the paper's figures, the stability table, budgets.

    gansweep report runs/mini-20261123-101500 [--out DIR]

    gansweep report runs/paper-sample --relative    # x axes as I' / I'(real test set)

Writes into DIR (default RUN_DIR/report): report.html (every image embedded, no
network needed), figure2.png, models.png, figure3.png, figure4.png, best_epoch.png,
budget.png, curves.png (convergence), margin.png and margin_hist.png (EBGAN runs;
the latter with several margins or norms), and the tables as CSV (stability.csv,
tests.csv, figure2_counts.csv, budget.csv, convergence.csv, median_curves.csv, margin.csv).
A partial sweep gets a report too; it says how complete it is.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis import figures
from analysis.load import Run, load_run, one_scorer
from analysis.stats import (DIGITS_RUN_SHARE, FAILURE_I_PRIME, MARGIN_GROUP, STILL_RISING, budget_table,
                            convergence_table, draws_digits, ebgan_vs_gan_tests, figure2_counts,
                            finished_scores, has_digit_share, margin_runs, margin_table, median_curves,
                            model_label, models, of_model, stability_table)
from sweep.errors import UserError
from sweep.record.ledger import check_run
from sweep.record.results import write_atomic
from sweep.record.schema import DIVERGED, ERROR, FINISHED, OK, PENDING


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:,.3f}".rstrip("0").rstrip(".")
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, cls: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _settings(results: pd.DataFrame) -> pd.DataFrame:
    from sweep.plan.config import SETTINGS

    rows = []
    for s in SETTINGS:
        if s in results.columns:
            vals = sorted({str(v) for v in results[s]})
            rows.append({"setting": s, "value": ", ".join(vals)})
    return pd.DataFrame(rows)


def _convergence_line(conv: pd.DataFrame) -> str:
    if conv.empty:
        return ""
    parts = [f"{r.model} {r.still_rising_share:.0%} (median I' {r.median_before:.2f} -> {r.median_last:.2f} "
             f"at epoch {r.epochs})" for r in conv.itertuples(index=False)]
    return (f" Still rising by more than {STILL_RISING:.0%} over their last epoch: " + "; ".join(parts) + ".")


def _headline(run: Run, tests: pd.DataFrame) -> str:
    df = run.results
    parts = []
    scored = has_digit_share(df)
    for m in models(df):
        runs = of_model(df, m)
        s = finished_scores(runs)
        if len(s):
            digits = f", {draws_digits(runs).mean():.0%} draw digits" if scored else ""
            parts.append(f"{model_label(m)}: median I' {s.median():.2f}, "
                         f"{(s < FAILURE_I_PRIME).mean():.0%} of {len(s)} finished runs below "
                         f"{FAILURE_I_PRIME:g}{digits}")
    text = "; ".join(parts) + "." + _d_batch_line(df)
    for t in tests.itertuples(index=False):
        a, b = t.comparison.split(" vs ")
        text += (f" {t.comparison}: a random {a} run outscores a random {b} run "
                 f"with probability {t.prob_a_beats_b:.2f} (Mann-Whitney p = {t.p_value:.2g}).")
    return text


def _d_batch_line(df: pd.DataFrame) -> str:
    """' D's batch norm (d_batch): joint for GAN; separate for EBGAN, EBGAN-PT.' The setting
    that decides whether a GAN can train at all here (docs/reproduction.md), so the headline names it."""
    if "d_batch" not in df.columns:
        return ""
    by_value: dict[str, list[str]] = {}
    for m in models(df):
        value = "/".join(sorted(set(map(str, of_model(df, m)["d_batch"]))))
        by_value.setdefault(value, []).append(model_label(m))
    return " D's batch norm (d_batch): " + "; ".join(f"{v} for {', '.join(ms)}" for v, ms in by_value.items()) + "."


def _scope(manifest: dict, n_points: int) -> str:
    """'a 24-point sample (seed 0) of the 7,168-point grid' (runs before --sample: their count)."""
    return manifest.get("scope") or f"the {n_points:,}-point grid"


def _margin_section(pngs: dict, margins: pd.DataFrame, img) -> str:
    if "margin" not in pngs:
        return ""
    hist = img("margin_hist", "I' per margin") if "margin_hist" in pngs else ""
    return f"""<h2>EBGAN energies and the margin</h2>
<p>The paper's analysis of EBGAN (its Theorem 2) assumes an equilibrium where D(x) &le; m &le; D(G(z)).
Each panel draws, for one energy norm and margin, the median over runs of each epoch's mean D(x)
(solid) and D(G(z)) (dashed), taken on training batches (dropout on), against m. Where the solid
line sits above m, real data is pushed as hard as generated data and the margin no longer separates
them. real_below_margin_share: the share of runs whose last epoch's D(x) is at most m.</p>
{img('margin', 'Energies against the margin')}
{_table(margins, 'margin')}
{hist}"""


def check_tables(run: Run) -> None:
    """Refuse (one line) a run whose tables break the ledger's rules: a histogram of such
    rows would count unfinished runs as finished."""
    problems = check_run(run.run_dir, run.results, run.curves)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{run.run_dir}: the tables break the ledger's rules: {problems[0]}{more}; "
                        f"`gansweep status {run.run_dir} --check` lists them")


def build_report(run_dir: Path, out: Path | None = None, relative: bool = False) -> Path:
    """relative: histogram x axes as I' / I'(real MNIST test set) of the run's own scorer."""
    run = load_run(run_dir)
    one_scorer(run.results, run.run_dir)  # before anything is written
    check_tables(run)
    df, m = run.results, run.manifest  # load_run adds the model column
    real = (m.get("reference_scores") or {}).get("i_prime")
    if relative and not real:
        raise UserError(f"{run.run_dir}: --relative needs the real test set's I', which this run's "
                        "manifest does not record (reference_scores)")
    x = figures.relative_axis(real) if relative else figures.I_AXIS
    x_rule = (f"I' / I'(real test set) = I' / {real:.2f}, 0 to 1.2 in 30 bins (--relative), the same in every "
              "panel; higher falls in the last bin." if relative else
              "I' from 0 to 14 in steps of 0.5, the same in every panel; higher scores fall in the last bin.")
    out = out or run.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)

    stab = stability_table(df)
    tests = ebgan_vs_gan_tests(df)
    conv = convergence_table(run.curves, df)
    margins = margin_table(df, run.curves)
    best = figures.best_runs(df)
    samples = {pid: run.samples(pid) for pid in best["point_id"]}
    pngs = {
        "figure2": _png(figures.figure2(df, real, x)),
        "models": _png(figures.models_figure(df, real, x)),
        "figure3": _png(figures.figure3(df, real, x)),
        "figure4": _png(figures.figure4(df, {k: v for k, v in samples.items() if v is not None})),
        "best_epoch": _png(figures.final_vs_best_figure(df, real, x)),
        "budget": _png(figures.budget_figure(df, real)),
        "curves": _png(figures.convergence_figure(run.curves, df)),
    }
    if figures.has_began_curves(run.curves):  # BEGAN's convergence measure, lower is better
        pngs["m_global"] = _png(figures.curves_figure(
            run.curves, df, "m_global", "M_global", "BEGAN convergence measure M_global"))
    hinged = margin_runs(df, run.curves)
    if len(hinged):
        pngs["margin"] = _png(figures.margin_figure(df, run.curves))
        if len(hinged.groupby(MARGIN_GROUP)) > 1:
            pngs["margin_hist"] = _png(figures.margin_hist_figure(df, run.curves, real, x))
    for name, data in pngs.items():
        write_atomic(out / f"{name}.png", lambda p, d=data: Path(p).write_bytes(d))
    tables = {"stability": stab, "tests": tests, "figure2_counts": figure2_counts(df),
              "budget": budget_table(df), "convergence": conv, "median_curves": median_curves(run.curves, df),
              "margin": margins}
    for name, t in tables.items():
        write_atomic(out / f"{name}.csv", lambda p, t=t: t.to_csv(p, index=False))

    counts = df["status"].value_counts()
    n = len(df)
    finished = int(sum(counts.get(s, 0) for s in FINISHED))
    complete = (f"{finished:,} of {n:,} trials finished (ok {int(counts.get(OK, 0)):,}, diverged "
                f"{int(counts.get(DIVERGED, 0)):,}); errored {int(counts.get(ERROR, 0)):,}, "
                f"pending {int(counts.get(PENDING, 0)):,}")
    partial = "" if finished == n else (
        f'<p class="partial" id="partial"><b>Partial run</b>: {n - finished:,} of {n:,} grid points have '
        "not finished, so every figure and table below describes only the finished ones. "
        f"<code>gansweep resume {html.escape(str(run.run_dir))}</code> finishes them.</p>")
    sessions = "; ".join(f"{s['started']}: {s['wall_seconds'] / 60:.1f} min wall, harness overhead "
                         f"{s['overhead_share']:.1%}" for s in m.get("sessions", [])) or "none finished yet"

    def img(name: str, alt: str) -> str:
        b64 = base64.b64encode(pngs[name]).decode()
        return f'<figure id="{name}"><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"></figure>'

    best_cols = ["model", "point_id", "i_prime", "inception_score", "fid", "classes_covered"] + \
        (["digit_share"] if has_digit_share(df) else [])
    best_tbl = best.reset_index()[best_cols] if len(best) else pd.DataFrame()
    ref_line = (f"The real MNIST test set scores I' = {real:.2f}, IS = "
                f"{m['reference_scores']['inception_score']:.2f} with this classifier (dotted lines)."
                if real else "")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>gansweep report: {html.escape(m['name'])}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1400px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }}
h1 {{ margin-bottom: 0.2em; }} h2 {{ margin-top: 1.8em; border-bottom: 1px solid #ddd; }}
.meta {{ color: #555; }} .partial {{ background: #fff4e5; padding: 0.6em 1em; border-left: 4px solid #e08a00; }} .headline {{ background: #f4f7fb; padding: 0.8em 1em; border-left: 4px solid #1f77b4; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
table {{ border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0; }}
th, td {{ border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, th:first-child {{ text-align: left; }}
</style></head><body>
<h1>gansweep report: {html.escape(m['name'])}</h1>
<p class="meta">preset <b>{html.escape(m['preset'])}</b>: {html.escape(_scope(m, len(df)))} · {complete} · created {html.escape(m['created'])}
· gansweep {html.escape(m['gansweep_version'])} ({html.escape(m['git_commit'])})
· classifier sha256 {html.escape(m['classifier_sha256'][:16])}…</p>
{partial}<p class="headline" id="headline">{html.escape(_headline(run, tests) + _convergence_line(conv))}</p>
<p>The question of the EBGAN paper (section 4.1): are EBGANs trained more reliably than GANs over
the same grid of architectures and optimizers? Each histogram shows, for each model (a family on
the paper's fully-connected nets, or on DCGAN-style conv nets, hatched), the percent of its finished
runs whose final I' falls in each bin. {ref_line}</p>
<h2>Figure 2: I' histograms</h2>{img('figure2', "Figure 2: I' histograms")}
<h2>Every model</h2>
<p>One panel per model (all runs), its histogram filled, the GAN of the same arch outlined (for a
GAN: the EBGAN of its arch). Figure 2 overlays only the paper's fully-connected models.</p>
{img('models', "Every model's I' histogram")}
<h2>Figure 3: GAN runs by optimizer and learning rate</h2>{img('figure3', 'Figure 3: GAN sub-grids')}
<h2>Figure 4: best run of each model</h2>{img('figure4', 'Figure 4: samples')}
{_table(best_tbl, 'best')}
<h2>Stability</h2>
<p>Per model, then per GAN (optimD, optimG, lr) sub-grid. failure_share: share of finished runs with
I' &lt; {FAILURE_I_PRIME:g}. IS, FID, classes and digit_share: medians over runs that finished without
diverging. draws_digits_share: share of finished runs with digit_share &ge; {DIGITS_RUN_SHARE:g}.</p>
{_table(stab, 'stability')}
<h3>EBGAN vs GAN, two-sample test</h3>
<p>Two-sided Mann-Whitney U test on final I' (diverged runs as 0), each energy-based model against
the GAN of the same arch, and DCGAN nets against the fully-connected ones of their family.
prob_a_beats_b = U / (n_a n_b).</p>
{_table(tests, 'tests') if len(tests) else '<p>Needs finished runs of both GAN and an EBGAN family.</p>'}
<h2>Budget: expected best I' of k random runs</h2>{img('budget', 'Budget curve')}
<h2>Convergence: was the budget enough?</h2>
<p>Left, each model's median I' per epoch over its ok runs. Right, each ok run's rise of I' over its
last scored epoch; a run whose I' still grew by more than {STILL_RISING:.0%} was stopped by the budget,
not by its training. The final-epoch histograms above measure such runs before they finished.</p>
{img('curves', 'Convergence')}
{_table(conv, 'convergence') if len(conv) else '<p>Needs two scored epochs.</p>'}
<h3>Final vs best epoch</h3>
<p>The same runs' best scored epoch (the table's <code>best_i_prime</code>) against their final one.</p>
{img('best_epoch', "Final vs best-epoch I'")}
{img('m_global', 'BEGAN M_global curves') if 'm_global' in pngs else ''}
{_margin_section(pngs, margins, img)}
<h2>Settings and conventions</h2>
{_table(_settings(df), 'settings')}
<ul>
<li>I' = E<sub>x</sub> KL(p(y) || p(y|x)) from the fixed classifier, probabilities clamped at prob_eps;
each run is scored on n_eval samples from fixed noise after its last epoch.</li>
<li>Diverged runs (NaN or inf in a loss or a sample) count as I' = 0; errored and pending runs are not plotted.</li>
<li>Histogram bins: {html.escape(x_rule)}</li>
<li>Convergence: a run is still rising when its I' grew by more than {STILL_RISING:.0%} over its last
scored epoch (from 0: any rise); the median per epoch and that share are over the ok runs. Best epoch:
each finished run's highest scored epoch (<code>best_i_prime</code>; a diverged run keeps its best
epoch before it).</li>
<li>digit_share: the share of a run's scored samples whose top class probability reaches the
classifier's pinned digit threshold (set to accept 99% of the real MNIST test set). A run draws digits
when its digit_share is at least {DIGITS_RUN_SHARE:g}; the cross-hatched foot of each histogram bar is
the runs that finished but do not, whatever their I'.</li>
<li>Figure 4 shows the 64 fixed-noise samples each trial saves at its last evaluation, for the run with
the highest I' among those that draw digits.</li>
<li>Sessions: {html.escape(sessions)}.</li>
</ul>
</body></html>
"""
    write_atomic(out / "report.html", lambda p: Path(p).write_text(page, encoding="utf-8"))
    return out / "report.html"
