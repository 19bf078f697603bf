"""Two runs side by side: what a setting (or a code change) did to each model.

    gansweep run --preset mini --name before --set d_batch=separate
    gansweep run --preset mini --name after
    gansweep compare runs/before runs/after          # -> runs/after/compare-before/compare.html
    gansweep compare runs/d-batch --by d_batch=separate,joint   # one run, split by a setting it varies
    gansweep compare runs/d-batch --by d_batch=joint,separate --within nLayerD,lr   # and per cell

For every model either run has: both runs' I' histograms overlaid (A outlined, B
filled), their failure shares (I' < 1), shares of runs that draw digits and median
digit_share side by side, and a two-sided Mann-Whitney test of B's final I' against
A's (prob_b_beats_a: the chance that a random B run outscores a random A run); with
--within AXES, the same for every cell of those axes inside each model too. The
runs' labels name the settings whose values differ between them (e.g. "d_batch=joint"),
else their run names. Writes compare.html (images embedded), compare.png and
compare.csv; the table is also printed.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.load import Run, load_run, one_scorer
from analysis.plot import I_AXIS, XAxis, axes_labels, hist, label_outer, panels, styled
from analysis.report import TEMPLATES, check_tables, html_table, png_bytes, template
from analysis.stats import (
    DIGITS_RUN_SHARE,
    FAILURE_I_PRIME,
    draws_digits,
    finished_scores,
    has_digit_share,
    mann_whitney,
    model_label,
    models,
    of_model,
)
from sweep.errors import UserError
from sweep.plan.config import SETTINGS
from sweep.record.results import write_atomic

MAX_LABEL_SETTINGS = 3  # a label names at most this many differing settings, then "..."


def differing_settings(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Settings whose values differ between two sets of rows: name -> (A's values, B's values),
    each its sorted distinct values joined by "/" ("joint", or "joint/separate")."""
    out = {}
    for name in SETTINGS:
        va = sorted(set(map(str, a[name].dropna()))) if name in a else []
        vb = sorted(set(map(str, b[name].dropna()))) if name in b else []
        if va != vb:
            out[name] = ("/".join(va) or "-", "/".join(vb) or "-")
    return out


def labels(a: Run, b: Run) -> tuple[str, str]:
    """'d_batch=separate' / 'd_batch=joint/separate' when settings tell the runs apart, else
    the run names."""
    diff = differing_settings(a.results, b.results)
    if not diff:
        name_a, name_b = a.manifest.get("name", "A"), b.manifest.get("name", "B")
        return (name_a, name_b) if name_a != name_b else (str(a.run_dir), str(b.run_dir))
    shown = list(diff.items())[:MAX_LABEL_SETTINGS]
    more = ", ..." if len(diff) > MAX_LABEL_SETTINGS else ""
    return (", ".join(f"{k}={va}" for k, (va, _) in shown) + more,
            ", ".join(f"{k}={vb}" for k, (_, vb) in shown) + more)


def compare_table(a: pd.DataFrame, b: pd.DataFrame, within: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per model of either run: the settings its runs changed, finished runs, median I',
    failure and digit shares of A and B, and the Mann-Whitney test of B against A (NaN where a
    run has no such model); with `within` (axes or settings), then one row per cell of their values."""
    scored = has_digit_share(a) and has_digit_share(b)
    rows = []
    for m in models(pd.concat([a[["family", "model"]], b[["family", "model"]]], ignore_index=True)):
        ra, rb = of_model(a, m), of_model(b, m)
        rows.append(_compared(model_label(m), ra, rb, scored))
        if within:
            both = pd.concat([ra[list(within)], rb[list(within)]]).drop_duplicates().sort_values(list(within))
            for cell in both.itertuples(index=False):
                key = dict(zip(within, cell))
                pick = lambda df: df[(df[list(within)] == pd.Series(key)).all(axis=1)]  # noqa: E731
                name = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in key.items())
                rows.append(_compared(f"  {name}", pick(ra), pick(rb), scored))
    return pd.DataFrame(rows)


def _compared(label: str, ra: pd.DataFrame, rb: pd.DataFrame, scored: bool) -> dict:
    """compare_table's row of one model, or of one cell of it."""
    sa, sb = finished_scores(ra), finished_scores(rb)
    u, p = mann_whitney(sa, sb)
    changed = differing_settings(ra, rb) if len(ra) and len(rb) else {}
    row = {"model": label,
           "settings_changed": "; ".join(f"{k} {va} -> {vb}" for k, (va, vb) in changed.items()),
           "n_a": len(sa), "n_b": len(sb),
           "median_i_prime_a": _median(sa), "median_i_prime_b": _median(sb),
           "failure_share_a": _share(sa < FAILURE_I_PRIME, len(sa)),
           "failure_share_b": _share(sb < FAILURE_I_PRIME, len(sb))}
    if scored:
        row.update({"draws_digits_a": _share(draws_digits(ra), len(sa)),
                    "draws_digits_b": _share(draws_digits(rb), len(sb)),
                    "median_digit_share_a": _median(finished_scores(ra, "digit_share")),  # diverged: 0
                    "median_digit_share_b": _median(finished_scores(rb, "digit_share"))})
    # u is A's U: the chance that a random B run beats a random A run is 1 - U_A / (n_a n_b)
    row.update({"prob_b_beats_a": 1.0 - u / (len(sa) * len(sb)) if len(sa) and len(sb) else math.nan,
                "p_value": p})
    return row


def _median(s: pd.Series) -> float:
    return float(s.median()) if len(s) else math.nan


def _share(mask: pd.Series, n: int) -> float:
    return float(mask.sum()) / n if n else math.nan


@styled
def compare_figure(a: pd.DataFrame, b: pd.DataFrame, label_a: str, label_b: str,
                   real_i_prime: float | None = None, x: XAxis = I_AXIS) -> Figure:
    """One panel per model: B's histogram filled (non-digit runs cross-hatched at each bar's foot),
    A's outlined in black."""
    ms = models(pd.concat([a[["family", "model"]], b[["family", "model"]]], ignore_index=True))
    fig, axes = panels(len(ms), 4.6, 3.2, sharey=True)
    for ax, m in zip(axes, ms):
        ra, rb = of_model(a, m), of_model(b, m)
        na, nb = len(finished_scores(ra)), len(finished_scores(rb))
        if nb:
            hist(ax, rb, m, n_label=False, x=x)
        if na:
            ax.stairs(x.bin(finished_scores(ra))[1], x.edges, color="black", linewidth=1.4, label="A")
        handles, names = ax.get_legend_handles_labels()
        names = [f"A: {label_a} (n={na})" if n == "A" else f"B: {label_b} (n={nb})" for n in names]
        ax.set_title(model_label(m))
        axes_labels(ax, real_i_prime, x)
        ax.legend(handles, names, fontsize=7, loc="upper right")
    label_outer(axes)
    fig.suptitle(f"A, outlined: {label_a}   B, filled: {label_b}", fontsize=10)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Side:
    """One side of a comparison: its rows (with their model column), its label, where it is from."""

    label: str
    results: pd.DataFrame
    source: str  # "runs/mini-... (preset mini)" or "runs/d-batch, d_batch=joint"


def runs_sides(run_a: Path, run_b: Path) -> tuple[Side, Side, float | None]:
    """Two runs as the sides A and B (same scorer, tables that keep the ledger's rules)."""
    a, b = load_run(run_a), load_run(run_b)
    if a.run_dir.resolve() == b.run_dir.resolve():
        raise UserError(f"{a.run_dir}: compare needs two different runs (or one run and --by SETTING)")
    sha_a, sha_b = one_scorer(a.results, a.run_dir), one_scorer(b.results, b.run_dir)
    if sha_a and sha_b and sha_a != sha_b:
        raise UserError(f"{a.run_dir} and {b.run_dir} were scored by different classifiers "
                        f"({sha_a[:12]}... and {sha_b[:12]}...); their I' do not compare")
    for run in (a, b):
        check_tables(run)
    label_a, label_b = labels(a, b)
    real = (b.manifest.get("reference_scores") or {}).get("i_prime")
    return (Side(label_a, a.results, f"{a.run_dir} (preset {a.manifest.get('preset', '?')})"),
            Side(label_b, b.results, f"{b.run_dir} (preset {b.manifest.get('preset', '?')})"), real)


def split_sides(run_dir: Path, by: str) -> tuple[Side, Side, float | None]:
    """One run split by a setting it varies: `--by d_batch` (its two values, in sorted order) or
    `--by d_batch=separate,joint` (A, then B)."""
    run = load_run(run_dir)
    check_tables(run)
    name, _, values = by.partition("=")
    df = run.results
    if name not in SETTINGS or name not in df.columns:
        raise UserError(f"--by {by}: {name!r} is not a setting (settings are: {', '.join(SETTINGS)})")
    held = sorted(set(map(str, df[name])))
    want = values.split(",") if values else held
    if len(want) != 2 or len(set(want)) != 2:
        raise UserError(f"--by {by}: needs two values of {name}; {run.run_dir} holds {', '.join(held)}"
                        + ("" if values else f" (name them: --by {name}=A,B)"))
    missing = [v for v in want if v not in held]
    if missing:
        raise UserError(f"--by {by}: no row of {run.run_dir} has {name}={missing[0]} (it holds {', '.join(held)})")
    real = (run.manifest.get("reference_scores") or {}).get("i_prime")
    return tuple(Side(f"{name}={v}", df[df[name].astype(str) == v], f"{run.run_dir}, {name}={v}")
                 for v in want) + (real,)


def build_compare(a: Side, b: Side, out: Path, real_i_prime: float | None = None,
                  within: tuple[str, ...] = ()) -> tuple[Path, pd.DataFrame]:
    """compare.html, compare.png and compare.csv of two sides into `out`; returns (page, table)."""
    table = compare_table(a.results, b.results, within)
    png = png_bytes(compare_figure(a.results, b.results, a.label, b.label, real_i_prime))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "compare.png", lambda p: Path(p).write_bytes(png))
    write_atomic(out / "compare.csv", lambda p: table.to_csv(p, index=False))
    diff = differing_settings(a.results, b.results)
    differing = ("".join(f"<li><code>{html.escape(k)}</code>: {html.escape(va)} &rarr; {html.escape(vb)}</li>"
                         for k, (va, vb) in diff.items()) or "<li>none: the runs hold the same settings</li>")
    page = template("compare.html").substitute(
        style=(TEMPLATES / "style.css").read_text(encoding="utf-8"), label_a=html.escape(a.label),
        label_b=html.escape(b.label), source_a=html.escape(a.source), source_b=html.escape(b.source),
        differing=differing, png=base64.b64encode(png).decode(), table=html_table(table, "compare"),
        failure=f"{FAILURE_I_PRIME:g}", digits=f"{DIGITS_RUN_SHARE:g}")
    write_atomic(out / "compare.html", lambda p: Path(p).write_text(page, encoding="utf-8"))
    return out / "compare.html", table


def format_table(table: pd.DataFrame, label_a: str, label_b: str) -> str:
    """The table as the terminal shows it: one line per model (and cell), A -> B."""
    digits = "draws_digits_a" in table.columns
    w = max([16] + [len(m) for m in table["model"]])
    head = (f"{'model':<{w}} {'n A/B':>7}  {'median I_':<14} {'I_ < 1':<12}" + (f" {'draw digits':<12}" if digits else "")
            + f" {'P(B>A)':>7} {'p':>8}  settings changed").replace("I_", "I'")
    lines = [f"A: {label_a}", f"B: {label_b}", head]
    for r in table.itertuples(index=False):
        line = (f"{r.model:<{w}} {f'{r.n_a}/{r.n_b}':>7}  {_num(r.median_i_prime_a) + ' -> ' + _num(r.median_i_prime_b):<14}"
                f" {_pct(r.failure_share_a) + ' -> ' + _pct(r.failure_share_b):<12}")
        if digits:
            line += f" {_pct(r.draws_digits_a) + ' -> ' + _pct(r.draws_digits_b):<12}"
        lines.append(line + f" {_num(r.prob_b_beats_a):>7} {_p(r.p_value):>8}  {r.settings_changed}".rstrip())
    return "\n".join(lines)


def _num(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.2f}"


def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.0%}"


def _p(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.2g}"
