"""The paper's figures and the report's others, redrawn from a run. Each takes the run and an x axis.

    from analysis.load import load_run
    from analysis import figures
    run = load_run("runs/mini-...")
    figures.figure2(run).savefig("fig2.png")                 # every figure: fig(run, x=I_AXIS)
    figures.figure2(run.with_results(run.results.query("lr == 0.001")))   # a subset of the runs

Figures compare *models*: a family on the paper's fully-connected nets ("EBGAN")
or on another arch ("EBGAN (DCGAN)"); each keeps its family's colour, DCGAN
nets drawn hatched / dashed.

Figure 2: I' histograms, percent of each model's runs per bin, three panels; the
          paper's fully-connected models overlaid (as the paper draws GAN vs EBGAN).
Models:   every model's histogram in its own panel, against the GAN of its arch.
Figure 3: one panel per GAN (optimD, optimG, lr) sub-grid, EBGAN as reference.
Figure 4: samples of the best run (highest final I' among the runs that draw digits,
          digit_share >= 0.5) of each model. The samples
          are the 64 images from fixed noise that every trial saves at its last
          evaluation (RUN_DIR/samples/<point_id>.npy), so no generator is rebuilt.
Budget:   expected best I' among k runs drawn at random from a model's grid.
Convergence: median I' per epoch, and each run's rise over the last third of its epochs.
Best epoch: final vs best-epoch I' histograms per model.
M_global: BEGAN's convergence measure per epoch.
Margin:   EBGAN's D(x) and D(G(z)) per epoch against m, per (energy_norm, margin);
          and I' histograms per margin for each norm.
Histogram x axes are I', or I' / I'(real test set) with `relative_axis` (analysis/plot.py).
FIGURES lists them in the report's order, with when each is drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.load import Run
from analysis.plot import (I_AXIS, XAxis, axes_labels, color, finish_panels, hist, line_style, non_digit_legend,
                           panels, relative_axis, styled)
from analysis.samples import tile
from analysis.stats import (DIGITS_RUN_SHARE, FAILURE_I_PRIME, FIGURE2_PANELS, MARGIN_GROUP, STILL_RISING,
                            SUBGRID, arch_of, best_scores, budget_table, draws_digits, family_of,
                            finished_scores, has_digit_share, last_rise, margin_runs, model_label, models,
                            of_model, with_models)
from models.archs import ARCHS
from sweep.plan.config import model_name
from sweep.record.schema import FINISHED, OK

__all__ = ["FIGURES", "I_AXIS", "XAxis", "relative_axis"]


def figure2_models(df: pd.DataFrame) -> list[str]:
    """The models Figure 2 overlays: the paper's fully-connected ones (all models when none)."""
    ms = models(df)
    return [m for m in ms if arch_of(m) == "mlp"] or ms


@styled
def figure2(run: Run, x: XAxis = I_AXIS) -> Figure:
    df, real_i_prime = run.results, run.real_i_prime
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, (title, select) in zip(axes, FIGURE2_PANELS.items()):
        sub = select(df)
        for m in figure2_models(df):
            hist(ax, of_model(sub, m), m, x=x)
        ax.set_title(title)
        axes_labels(ax, real_i_prime, x)
        non_digit_legend(ax, loc="upper right", frameon=False)
    fig.suptitle("Figure 2: I' of finished runs, GAN vs EBGAN and the other families" +
                 ("  (dotted: real MNIST test set)" if real_i_prime else ""))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def reference_of(model: str, present: list[str]) -> str | None:
    """What a model's histogram is drawn against: the GAN of its arch (a GAN: the EBGAN of its arch)."""
    ref = model_name("ebgan" if family_of(model) == "gan" else "gan", arch_of(model))
    return ref if ref in present and ref != model else None


def hist_with_reference(ax, df: pd.DataFrame, runs: pd.DataFrame, model: str, present: list[str], x: XAxis) -> None:
    """`runs` of a model filled, and every run of its reference model (reference_of) outlined."""
    hist(ax, runs, model, n_label=False, x=x)
    ref = reference_of(model, present)
    if ref:
        hist(ax, of_model(df, ref), ref, n_label=False, reference=True, x=x)


@styled
def models_figure(run: Run, x: XAxis = I_AXIS) -> Figure:
    """Small multiples: every model's I' histogram (all runs) in its own panel, against a reference."""
    df, real_i_prime = with_models(run.results), run.real_i_prime
    ms = models(df)
    fig, axes = panels(len(ms), 3.4, 2.8, sharex=True, sharey=True)
    for ax, m in zip(axes, ms):
        runs = of_model(df, m)
        s = finished_scores(runs)
        hist_with_reference(ax, df, runs, m, ms, x)
        non_digit_legend(ax, loc="upper right", frameon=False, fontsize=7.5)
        median = f"median {s.median():.2f}, {(s < FAILURE_I_PRIME).mean():.0%} below {FAILURE_I_PRIME:g}" \
            if len(s) else "no finished runs"
        if len(s) and has_digit_share(df):
            median += f", {draws_digits(runs).mean():.0%} draw digits"
        ax.set_title(f"{model_label(m)} (n={len(s)})\n{median}", fontsize=8.5)
        axes_labels(ax, real_i_prime, x)
    return finish_panels(fig, axes, "Every model's I' histogram (all runs), outlined against the GAN of the same arch", 0.95)


def figure3_panels(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """((model, optimD, optimG, lr), runs) for every GAN model's sub-grids."""
    out = []
    for m in (m for m in models(df) if family_of(m) == "gan"):
        out += [((m, *key), sub) for key, sub in of_model(df, m).groupby(SUBGRID, sort=True)]
    return out


@styled
def figure3(run: Run, x: XAxis = I_AXIS) -> Figure:
    df, real_i_prime = with_models(run.results), run.real_i_prime
    cells = figure3_panels(df)
    fig, axes = panels(len(cells), 3.4, 2.7, sharex=True, sharey=True)
    several = len({key[0] for key, _ in cells}) > 1
    ms = models(df)
    legend_done = set()
    for ax, ((m, od, og, lr), sub) in zip(axes, cells):
        hist_with_reference(ax, df, sub, m, ms, x)  # the EBGAN of the same arch, alike in each panel
        if m not in legend_done:  # one legend per GAN model, on its first panel
            non_digit_legend(ax, loc="upper right", frameon=False, fontsize=7.5)
            legend_done.add(m)
        name = f"{model_label(m)}\n" if several else ""
        ax.set_title(f"{name}optimD {od}, optimG {og}, lr {lr:g}  (n={len(sub)})", fontsize=8.5)
        axes_labels(ax, real_i_prime, x)
    return finish_panels(fig, axes, "Figure 3: GAN runs by (optimD, optimG, lr), the EBGAN of the same arch as reference", 0.96)


def best_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The run with the highest final I' of each model among its ok runs that draw digits
    (digit_share >= DIGITS_RUN_SHARE), indexed by model. A model none of whose runs draws
    digits has no row. Tables scored before the digit test: the highest I' of all ok runs."""
    df = with_models(df)
    ok = df[df["status"] == OK].dropna(subset=["i_prime"])
    if has_digit_share(df):
        ok = ok[ok["digit_share"] >= DIGITS_RUN_SHARE]
    best = ok.loc[ok.groupby("model")["i_prime"].idxmax()]
    return best.set_index("model").loc[[m for m in models(df) if m in best["model"].values]]


@styled
def figure4(run: Run, x: XAxis = I_AXIS) -> Figure:
    """The best run's samples (Run.samples) of every model with finished runs; a model whose runs
    draw no digits says so instead of showing noise."""
    df = with_models(run.results)
    best = best_runs(df)
    scored = has_digit_share(df)
    shown = [m for m in models(df) if df.loc[df["model"] == m, "status"].isin(FINISHED).any()]
    fig, axes = panels(max(len(shown), 1), 4.2, 4.8, layout="constrained")
    if not shown:
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no finished runs yet", ha="center", va="center")
    for ax, m in zip(axes, shown):
        ax.set_axis_off()
        if m not in best.index:
            ok = of_model(df, m).query("status == 'ok'")
            top = f"; the highest is {ok['digit_share'].max():.2f}" if len(ok) else ""
            ax.text(0.5, 0.5, f"no run draws digits:\nnone of {len(ok)} ok runs has\n"
                              f"digit_share >= {DIGITS_RUN_SHARE:g}{top}",
                    ha="center", va="center", fontsize=10, wrap=True)
            ax.set_title(model_label(m), fontsize=8.5)
            continue
        row = best.loc[m]
        imgs = run.samples(row["point_id"])
        unit = ARCHS[arch_of(m)].size_unit if arch_of(m) in ARCHS else ""  # dcgan sizes are channels: "ch"
        if imgs is None:
            ax.text(0.5, 0.5, "samples not saved", ha="center", va="center")
        else:
            ax.imshow(tile(imgs), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        share = f", digit_share {row['digit_share']:.2f}" if scored else ", digit_share not measured"
        ax.set_title(f"{model_label(m)}: I' {row['i_prime']:.2f}{share}\n"
                     f"G {row['nLayerG']}x{row['sizeG']}{unit}, D {row['nLayerD']}x{row['sizeD']}{unit}, "
                     f"{'dropout' if row['dropoutD'] else 'no dropout'}, "
                     f"{row['optimD']}/{row['optimG']} lr {row['lr']:g}", fontsize=8.5)
    rule = (f"among runs with digit_share >= {DIGITS_RUN_SHARE:g}" if scored
            else "scored before the digit test: by I' alone")
    # two lines: one line is wider than a figure of one or two panels, and was cut at its left edge
    fig.suptitle(f"Figure 4: samples of the best run of each model,\n{rule} (final epoch, fixed noise)")
    return fig


@styled
def budget_figure(run: Run, x: XAxis = I_AXIS) -> Figure:
    """Expected best I' of k random runs per model (x is not used: the axis is k)."""
    table, real_i_prime = budget_table(run.results), run.real_i_prime
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for m, sub in table.groupby("model", sort=False):
        ax.plot(sub["k"], sub["expected_best_i_prime"], color=color(m), linewidth=1.6,
                label=f"{model_label(m)} (n={len(sub)})", **line_style(m))
    if len(table) and table["k"].max() > 20:
        ax.set_xscale("log")
    if real_i_prime:
        ax.axhline(real_i_prime, color="k", linestyle=":", linewidth=1, label="real MNIST test set")
    ax.set_xlabel("k: runs drawn at random from the model's grid")
    ax.set_ylabel("expected best I' of the k runs")
    ax.set_title("Budget: what k random configurations buy (Kurach et al. 2019)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def curves_figure(curves: pd.DataFrame, results: pd.DataFrame, metric: str = "i_prime",
                  label: str = "I'", title: str = "Training curves") -> Figure:
    """Median of a per-epoch metric for each model, with the interquartile band."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    _median_curves(ax, curves, results, metric, label)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _median_curves(ax, curves: pd.DataFrame, results: pd.DataFrame, metric: str, label: str) -> None:
    if not curves.empty and metric in curves.columns:
        model_of = with_models(results).set_index("point_id")["model"]
        c = curves.assign(model=curves["point_id"].map(model_of)).dropna(subset=[metric, "model"])
        drawn = [m for m in models(results) if m in set(c["model"])]
        alpha = 0.15 if len(drawn) <= 3 else 0.07  # many overlapping bands: keep the medians readable
        for m in drawn:
            q = c[c["model"] == m].groupby("epoch")[metric].quantile([0.25, 0.5, 0.75]).unstack()
            ax.plot(q.index, q[0.5], marker="o", color=color(m), label=model_label(m), **line_style(m))
            ax.fill_between(q.index, q[0.25], q[0.75], color=color(m), alpha=alpha)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{label} (median, interquartile band)")
    if ax.lines:
        ax.legend(frameon=False)


def has_began_curves(curves: pd.DataFrame) -> bool:
    return not curves.empty and "m_global" in curves.columns and curves["m_global"].notna().any()


@styled
def m_global_figure(run: Run, x: XAxis = I_AXIS) -> Figure:
    """BEGAN's convergence measure M_global per epoch (lower is better; x is not used)."""
    return curves_figure(run.curves, run.results, "m_global", "M_global", "BEGAN convergence measure M_global")


@styled
def final_vs_best_figure(run: Run, x: XAxis = I_AXIS) -> Figure:
    """Per model: the final epoch's I' (filled, as Figure 2) against each run's best epoch
    (outlined; a diverged run keeps its best epoch before it). Far apart: the runs peaked and fell."""
    df, real_i_prime = with_models(run.results), run.real_i_prime
    ms = models(df)
    fig, axes = panels(len(ms), 3.4, 2.8, sharex=True, sharey=True)
    for ax, m in zip(axes, ms):
        runs = of_model(df, m)
        final, best = finished_scores(runs), best_scores(runs)
        ax.stairs(x.bin(final)[1], x.edges, fill=True, alpha=0.45, color=color(m), label="final epoch")
        ax.stairs(x.bin(best)[1], x.edges, color="k", linewidth=1.2, label="best epoch")
        ax.set_title(f"{model_label(m)} (n={len(final)})\nmedian final {final.median():.2f}, best {best.median():.2f}"
                     if len(final) else model_label(m), fontsize=8.5)
        axes_labels(ax, real_i_prime, x)
        ax.legend(loc="upper right", frameon=False, fontsize=7.5)
    return finish_panels(fig, axes, "Final vs best-epoch I' of every finished run", 0.93)


@styled
def convergence_figure(run: Run, x: XAxis = I_AXIS) -> Figure:
    """Left: each model's median I' per epoch over its ok runs (with the interquartile band).
    Right: each ok run's relative rise of I' over the last third of its epochs (from analysis/stats.py
    reference_epoch), the STILL_RISING line marked
    (x is not used: the axes are epochs and rises)."""
    curves, df = run.curves, run.results
    fig = Figure(figsize=(12, 4))
    ax, ax2 = fig.subplots(1, 2)
    _median_curves(ax, curves, df[df["status"] == OK], "i_prime", "I' of ok runs")
    ax.set_title("Median I' per epoch")
    rise = last_rise(curves, df)
    model_of = with_models(df).set_index("point_id")["model"]
    ms = [m for m in models(df) if (rise.index.map(model_of) == m).any()]
    for i, m in enumerate(ms):
        r = rise[rise.index.map(model_of) == m].clip(-1.0, 2.0) * 100  # inf (risen from 0) at the top
        jitter = np.linspace(-0.2, 0.2, len(r)) if len(r) > 1 else [0.0]
        ax2.scatter(np.full(len(r), i) + jitter, r, s=14, color=color(m), alpha=0.8)
        share = (rise[rise.index.map(model_of) == m] > STILL_RISING).mean()
        ax2.text(i, 205, f"{share:.0%}", ha="center", va="bottom", fontsize=8)
    ax2.axhline(100 * STILL_RISING, color="k", linestyle=":", linewidth=1)
    ax2.set_xticks(range(len(ms)), [model_label(m) for m in ms])
    ax2.set_ylim(-105, 230)
    ax2.set_ylabel("rise of I' over the last third of the epochs (%)")
    ax2.set_title(f"Still rising: share of ok runs above +{STILL_RISING:.0%} (dotted)")
    fig.tight_layout()
    return fig


VARIANT_COLORS = {"dropout, code dropped": "#1f77b4", "dropout, code kept": "#ff7f0e", "no dropout": "#2ca02c"}


@styled
def margin_figure(run: Run, x: XAxis = I_AXIS) -> Figure:
    """One panel per (energy_norm, margin) of the hinged families' ok runs: the median over
    runs of each epoch's mean D(x) (solid) and D(G(z)) (dashed), per dropout variant, against
    m (black). The paper's equilibrium has D(x) below m, D(G(z)) at or above it (x is not used)."""
    df, curves = run.results, run.curves
    runs = margin_runs(df, curves)
    runs = runs[runs["status"] == OK]
    groups = list(runs.groupby(MARGIN_GROUP, sort=True)) if len(runs) else []
    fig, axes = panels(max(len(groups), 1), 3.6, 2.9)
    if not groups:
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no finished EBGAN runs", ha="center", va="center")
    for ax, ((norm, margin), sub) in zip(axes, groups):
        c = curves[curves["point_id"].isin(sub["point_id"])].merge(sub[["point_id", "variant"]], on="point_id")
        for variant, cv in c.groupby("variant", sort=True):
            med = cv.groupby("epoch")[["d_real", "d_fake"]].median()
            color = VARIANT_COLORS.get(variant, "gray")
            ax.plot(med.index, med["d_real"], color=color, marker="o", markersize=3, label=f"D(x), {variant}")
            ax.plot(med.index, med["d_fake"], color=color, linestyle="--", label=f"D(G(z)), {variant}")
        ax.axhline(margin, color="k", linewidth=1.2, label="margin m")
        ax.set_title(f"{norm}, m = {margin:g}  (n={len(sub)})", fontsize=8.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel("energy (epoch mean)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if groups:
        axes[0].legend(frameon=False, fontsize=7)
    fig.suptitle("EBGAN energies against the margin: D(x) solid, D(G(z)) dashed, m black")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


@styled
def margin_hist_figure(run: Run, x: XAxis = I_AXIS) -> Figure:
    """One panel per energy_norm: the I' histogram of the hinged families' finished runs at
    each margin (outlined, darker for larger m)."""
    runs, real_i_prime = margin_runs(run.results, run.curves), run.real_i_prime
    norms = sorted(runs["energy_norm"].unique()) if len(runs) else []
    fig, axes = panels(max(len(norms), 1), 3.6, 2.9, sharey=True)
    for ax, norm in zip(axes, norms):
        sub = runs[runs["energy_norm"] == norm]
        margins = sorted(sub["margin"].unique())
        shades = matplotlib.colormaps["viridis"](np.linspace(0.85, 0.1, len(margins)))
        for shade, margin in zip(shades, margins):
            s = sub.loc[sub["margin"] == margin, "score"]
            ax.stairs(x.bin(s)[1], x.edges, color=shade, linewidth=1.6,
                      label=f"m = {margin:g} (n={len(s)}, median {s.median():.2f})")
        ax.set_title(norm, fontsize=8.5)
        axes_labels(ax, real_i_prime, x)
        ax.legend(frameon=False, fontsize=7)
    fig.suptitle("EBGAN I' per margin, for each energy norm")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig


def has_margins(run: Run) -> bool:
    return len(margin_runs(run.results, run.curves)) > 0


def has_several_margins(run: Run) -> bool:
    hinged = margin_runs(run.results, run.curves)
    return len(hinged) > 0 and len(hinged.groupby(MARGIN_GROUP)) > 1


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: its file name (and HTML id), what it shows, how it is drawn, and
    whether this run has it."""

    name: str
    alt: str
    draw: Callable[[Run, XAxis], Figure]
    shown: Callable[[Run], bool] = lambda run: True


FIGURES = (
    FigureSpec("figure2", "Figure 2: I' histograms", figure2),
    FigureSpec("models", "Every model's I' histogram", models_figure),
    FigureSpec("figure3", "Figure 3: GAN sub-grids", figure3),
    FigureSpec("figure4", "Figure 4: samples", figure4),
    FigureSpec("best_epoch", "Final vs best-epoch I'", final_vs_best_figure),
    FigureSpec("budget", "Budget curve", budget_figure),
    FigureSpec("curves", "Convergence", convergence_figure),
    FigureSpec("m_global", "BEGAN M_global curves", m_global_figure, lambda run: has_began_curves(run.curves)),
    FigureSpec("margin", "Energies against the margin", margin_figure, has_margins),
    FigureSpec("margin_hist", "I' per margin", margin_hist_figure, has_several_margins),
)
