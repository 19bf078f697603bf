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
import string
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import figures
from analysis.figures import FIGURES
from analysis.load import Run, load_run, one_scorer
from analysis.plot import I_AXIS, relative_axis
from analysis.stats import (
    DIGITS_RUN_SHARE,
    FAILURE_I_PRIME,
    STILL_RISING,
    budget_table,
    convergence_table,
    draws_digits,
    ebgan_vs_gan_tests,
    figure2_counts,
    finished_scores,
    has_digit_share,
    margin_table,
    median_curves,
    model_label,
    models,
    of_model,
    stability_table,
)
from sweep.errors import UserError
from sweep.plan.config import SETTINGS
from sweep.record.layout import REPORT_DIR
from sweep.record.results import write_atomic
from sweep.record.rules import check_run
from sweep.record.schema import DIVERGED, ERROR, FINISHED, OK, PENDING

TEMPLATES = Path(__file__).with_name("templates")  # the page's HTML and CSS


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _kind(column: str) -> str:
    """How a column's numbers read: shares as percentages, FID to one decimal, the rest to two."""
    c = column.lower()
    if "share" in c or c.startswith("prob_") or c.endswith("_rise"):
        return "percent"
    return "fid" if "fid" in c else "float"


def _fmt(v, column: str = "") -> str:
    """One cell for reading: I', IS, p-values and the like with 2 decimals (a tiny value is 0.00),
    FID with 1, shares as percentages, counts with thousands separators."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "–"
        kind = _kind(column)
        if kind == "percent":
            return f"{v:.0%}"
        return f"{v:,.1f}" if kind == "fid" else f"{v:,.2f}"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    return html.escape(str(v))


def html_table(df: pd.DataFrame, cls: str) -> str:
    """A table in its own box, which scrolls when the table is wider or longer than the page allows,
    with its header row and first column held in place (style.css)."""
    head = "".join(f"<th>{html.escape(str(c).replace('_', ' '))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v, c)}</td>" for v, c in zip(row, df.columns)) + "</tr>"
                   for row in df.itertuples(index=False))
    return (f'<div class="table-box"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _settings(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for s in SETTINGS:
        if s in results.columns:
            vals = sorted({str(v) for v in results[s]})
            rows.append({"setting": s, "value": ", ".join(vals)})
    return pd.DataFrame(rows)


def _convergence_line(conv: pd.DataFrame) -> str:
    if conv.empty:
        return ""
    parts = [f"{r.model} {r.still_rising_share:.0%} (median I' {r.median_before:.2f} at epoch {r.epoch_before} -> "
             f"{r.median_last:.2f} at epoch {r.epochs})" for r in conv.itertuples(index=False)]
    return (f" Still rising by more than {STILL_RISING:.0%} over the last third of their epochs: "
            + "; ".join(parts) + ".")


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


def template(name: str) -> string.Template:
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


def _margin_section(img, margins: pd.DataFrame) -> str:
    if not img("margin"):
        return ""
    return template("margin.html").substitute(margin=img("margin"), margin_table=html_table(margins, "margin"),
                                               margin_hist=img("margin_hist"))


def check_tables(run: Run) -> None:
    """Refuse (one line) a run whose tables break the ledger's rules: a histogram of such
    rows would count unfinished runs as finished. A missing samples or weights file is not checked
    here: it costs one sample grid, not a histogram (`status --check` names it, `resume` restores it)."""
    problems = check_run(run.dir, run.results, run.curves, files=False)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{run.run_dir}: the tables break the ledger's rules: {problems[0]}{more}; "
                        f"`gansweep status {run.run_dir} --check` lists them")


def build_report(run_dir: Path, out: Path | None = None, relative: bool = False) -> Path:
    """relative: histogram x axes as I' / I'(real MNIST test set) of the run's own scorer."""
    run = load_run(run_dir)
    one_scorer(run.results, run.run_dir)  # before anything is written
    check_tables(run)
    real = run.real_i_prime
    if relative and not real:
        raise UserError(f"{run.run_dir}: --relative needs the real test set's I', which this run's "
                        "manifest does not record (reference_scores)")
    x = relative_axis(real) if relative else I_AXIS
    out = out or run.run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    tables = report_tables(run)
    pngs = {f.name: png_bytes(f.draw(run, x)) for f in FIGURES if f.shown(run)}
    for name, data in pngs.items():
        write_atomic(out / f"{name}.png", lambda p, d=data: Path(p).write_bytes(d))
    for name, t in tables.items():
        write_atomic(out / f"{name}.csv", lambda p, t=t: t.to_csv(p, index=False))
    page = render_page(run, tables, pngs, x)
    write_atomic(out / "report.html", lambda p: Path(p).write_text(page, encoding="utf-8"))
    return out / "report.html"


def report_tables(run: Run) -> dict[str, pd.DataFrame]:
    """The report's tables, each also written as <name>.csv."""
    df = run.results
    return {"stability": stability_table(df), "tests": ebgan_vs_gan_tests(df), "figure2_counts": figure2_counts(df),
            "budget": budget_table(df), "convergence": convergence_table(run.curves, df),
            "median_curves": median_curves(run.curves, df), "margin": margin_table(df, run.curves)}


def _completeness(run: Run) -> tuple[str, str]:
    """(the meta line's counts, the partial-run warning or '')."""
    df = run.results
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
    return complete, partial


def render_page(run: Run, tables: dict[str, pd.DataFrame], pngs: dict[str, bytes], x) -> str:
    """report.html from its template (analysis/templates/): every image embedded, no network needed."""
    df, m, real = run.results, run.manifest, run.real_i_prime

    def img(name: str) -> str:
        if name not in pngs:
            return ""
        alt = next(f.alt for f in FIGURES if f.name == name)
        b64 = base64.b64encode(pngs[name]).decode()
        return f'<figure id="{name}"><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"></figure>'

    best = figures.best_runs(df)
    best_cols = ["model", "point_id", "i_prime", "inception_score", "fid", "classes_covered"] + \
        (["digit_share"] if has_digit_share(df) else [])
    x_rule = (f"I' / I'(real test set) = I' / {real:.2f}, 0 to 1.2 in 30 bins (--relative), the same in every "
              "panel; higher falls in the last bin." if x is not I_AXIS else
              "I' from 0 to 14 in steps of 0.5, the same in every panel; higher scores fall in the last bin.")
    complete, partial = _completeness(run)
    tests, conv = tables["tests"], tables["convergence"]
    return template("report.html").substitute(
        style=(TEMPLATES / "style.css").read_text(encoding="utf-8"), name=html.escape(m["name"]),
        preset=html.escape(m["preset"]), scope=html.escape(_scope(m, len(df))), complete=complete,
        created=html.escape(m["created"]), version=html.escape(m["gansweep_version"]),
        commit=html.escape(m["git_commit"]), classifier=html.escape(m["classifier_sha256"][:16]),
        partial=partial, headline=html.escape(_headline(run, tests) + _convergence_line(conv)),
        ref_line=(f"The real MNIST test set scores I' = {real:.2f}, IS = "
                  f"{m['reference_scores']['inception_score']:.2f} with this classifier (dotted lines)."
                  if real else ""),
        **{f.name: img(f.name) for f in FIGURES},
        best_table=html_table(best.reset_index()[best_cols] if len(best) else pd.DataFrame(), "best"),
        failure=f"{FAILURE_I_PRIME:g}", digits=f"{DIGITS_RUN_SHARE:g}", rising=f"{STILL_RISING:.0%}",
        stability_table=html_table(tables["stability"], "stability"),
        tests_table=html_table(tests, "tests") if len(tests) else "<p>Needs finished runs of both GAN and an EBGAN family.</p>",
        convergence_table=html_table(conv, "convergence") if len(conv) else "<p>Needs two scored epochs.</p>",
        margin_section=_margin_section(img, tables["margin"]), settings_table=html_table(_settings(df), "settings"),
        x_rule=html.escape(x_rule), sessions=html.escape("; ".join(
            f"{s['started']}: {s['wall_seconds'] / 60:.1f} min wall, harness overhead {s['overhead_share']:.1%}"
            for s in m.get("sessions", [])) or "none finished yet"))
