"""The paper's figures, redrawn from a results table. Each function returns a matplotlib Figure.

    from analysis.load import load_run
    from analysis import figures
    run = load_run("runs/mini-...")
    figures.figure2(run.results).savefig("fig2.png")

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
Convergence: median I' per epoch, and each run's rise over its last epoch.
Best epoch: final vs best-epoch I' histograms per model.
Margin:   EBGAN's D(x) and D(G(z)) per epoch against m, per (energy_norm, margin);
          and I' histograms per margin for each norm.
Histogram x axes are I', or I' / I'(real test set) with `relative_axis` (XAxis).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib
import matplotlib.patches
import matplotlib.ticker

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.stats import (DIGITS_RUN_SHARE, FAILURE_I_PRIME, FIGURE2_PANELS, I_PRIME_EDGES,
                            MARGIN_GROUP, STILL_RISING, SUBGRID, arch_of, best_scores, budget_table,
                            draws_digits, family_of, finished_scores, has_digit_share, histogram_percent,
                            last_rise, margin_runs, model_label, models, non_digit_scores, of_model,
                            with_models)
from models.archs import ARCHS
from sweep.plan.config import model_name
from sweep.record.schema import FINISHED, OK



@dataclass(frozen=True)
class XAxis:
    """What a histogram's x axis shows: I' itself, or I' over the real test set's I' (`relative`)."""

    label: str
    edges: np.ndarray
    scale: float = 1.0  # scores are divided by this before binning

    def bin(self, scores: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        return histogram_percent(np.asarray(scores, dtype=float) / self.scale, self.edges)


I_AXIS = XAxis("I' (modified inception score; higher is better)", I_PRIME_EDGES)


def relative_axis(real_i_prime: float) -> XAxis:
    """I' / I'(real MNIST test set) of the same scorer: 0 to 1.2 in 30 bins, so runs scored
    by different classifiers or prob_eps can be placed against each other, not only shaped."""
    return XAxis("I' / I'(real MNIST test set), same scorer", np.linspace(0.0, 1.2, 31), real_i_prime)
plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
                     "axes.grid": True, "grid.alpha": 0.25, "font.size": 9})


def _color(model: str) -> str:
    """The family's colour (models/losses.py); gray for a plugin family not loaded here."""
    from models.losses import FAMILIES

    fam = family_of(model)
    return FAMILIES[fam].color if fam in FAMILIES else "gray"


def _style(model: str) -> dict:
    """The paper's nets solid; other archs hatched and dashed, same colour as their family."""
    return {} if arch_of(model) == "mlp" else {"linestyle": "--"}


def _hist(ax, runs: pd.DataFrame, model: str, n_label: bool = True, reference: bool = False,
          x: XAxis = I_AXIS):
    """One model's I' histogram of `runs` (percent of its finished runs per bin). Filled, the
    part of each bin that is non-digit runs is stacked at its foot, cross-hatched in black."""
    scores = finished_scores(runs)
    _, pct = x.bin(scores)
    text = f"{model_label(model)} (n={len(scores)})" if n_label else model_label(model)
    if reference:
        ax.stairs(pct, x.edges, color=_color(model), linewidth=1.6, label=text, **_style(model))
        return
    hatch = None if arch_of(model) == "mlp" else "///"
    ax.stairs(pct, x.edges, fill=True, alpha=0.45 if hatch is None else 0.25, hatch=hatch,
              color=_color(model), label=text)
    ax.stairs(pct, x.edges, color=_color(model), linewidth=1.0, **_style(model))
    non_digit, _ = x.bin(non_digit_scores(runs))
    if non_digit.any():
        ax.stairs(100.0 * non_digit / len(scores), x.edges, fill=False, hatch="xxxx",
                  edgecolor=_color(model), linewidth=0.0)


def _non_digit_legend(ax, **kw) -> None:
    """The legend, with one entry for the cross-hatched non-digit stacks when a panel has any."""
    handles, labels = ax.get_legend_handles_labels()
    if any(p.get_hatch() == "xxxx" for p in ax.patches):
        handles.append(matplotlib.patches.Patch(facecolor="none", edgecolor="0.3", hatch="xxxx"))
        labels.append(f"of which non-digit runs (digit_share < {DIGITS_RUN_SHARE:g})")
    if handles:
        ax.legend(handles, labels, **kw)


def _axes_labels(ax, real_i_prime: float | None, x: XAxis = I_AXIS):
    ax.set_xlim(x.edges[0], x.edges[-1])
    ax.set_xlabel(x.label)
    ax.set_ylabel("% of the model's runs")
    if real_i_prime is not None and math.isfinite(real_i_prime):
        ax.axvline(min(real_i_prime / x.scale, x.edges[-1]), color="k", linestyle=":", linewidth=1)


def _panels(n: int, width: float, height: float, **subplots_kw) -> tuple[plt.Figure, list]:
    """A figure of n panels of width x height inches, at most 4 a row (wider rows stop being
    readable on a page); returns the figure and its n axes in reading order, spare cells hidden."""
    ncol = min(4, max(1, n))
    nrow = max(1, math.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False,
                             **subplots_kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _label_outer(axes: list) -> None:
    """Axis labels on the outer panels only, as Axes.label_outer, except that a panel with
    no panel below it (its column ends early) keeps its x labels."""
    cells = {(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in axes}
    for ax in axes:
        ss = ax.get_subplotspec()
        row, col = ss.rowspan.start, ss.colspan.start
        below = (row + 1, col) in cells
        ax.tick_params(labelbottom=not below, labelleft=col == 0)
        if below:
            ax.set_xlabel("")
        if col > 0:
            ax.set_ylabel("")


def figure2_models(df: pd.DataFrame) -> list[str]:
    """The models Figure 2 overlays: the paper's fully-connected ones (all models when none)."""
    ms = models(df)
    return [m for m in ms if arch_of(m) == "mlp"] or ms


def figure2(df: pd.DataFrame, real_i_prime: float | None = None, x: XAxis = I_AXIS) -> plt.Figure:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, (title, select) in zip(axes, FIGURE2_PANELS.items()):
        sub = select(df)
        for m in figure2_models(df):
            _hist(ax, of_model(sub, m), m, x=x)
        ax.set_title(title)
        _axes_labels(ax, real_i_prime, x)
        _non_digit_legend(ax, loc="upper right", frameon=False)
    fig.suptitle("Figure 2: I' of finished runs, GAN vs EBGAN and the other families" +
                 ("  (dotted: real MNIST test set)" if real_i_prime else ""))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def reference_of(model: str, present: list[str]) -> str | None:
    """What a model's histogram is drawn against: the GAN of its arch (a GAN: the EBGAN of its arch)."""
    ref = model_name("ebgan" if family_of(model) == "gan" else "gan", arch_of(model))
    return ref if ref in present and ref != model else None


def models_figure(df: pd.DataFrame, real_i_prime: float | None = None, x: XAxis = I_AXIS) -> plt.Figure:
    """Small multiples: every model's I' histogram (all runs) in its own panel, against a reference."""
    df = with_models(df)
    ms = models(df)
    fig, axes = _panels(len(ms), 3.4, 2.8, sharex=True, sharey=True)
    for ax, m in zip(axes, ms):
        runs = of_model(df, m)
        s = finished_scores(runs)
        _hist(ax, runs, m, n_label=False, x=x)
        ref = reference_of(m, ms)
        if ref:
            _hist(ax, of_model(df, ref), ref, n_label=False, reference=True, x=x)
        _non_digit_legend(ax, loc="upper right", frameon=False, fontsize=7.5)
        median = f"median {s.median():.2f}, {(s < FAILURE_I_PRIME).mean():.0%} below {FAILURE_I_PRIME:g}" \
            if len(s) else "no finished runs"
        if len(s) and has_digit_share(df):
            median += f", {draws_digits(runs).mean():.0%} draw digits"
        ax.set_title(f"{model_label(m)} (n={len(s)})\n{median}", fontsize=8.5)
        _axes_labels(ax, real_i_prime, x)
    _label_outer(axes)
    fig.suptitle("Every model's I' histogram (all runs), outlined against the GAN of the same arch")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def figure3_panels(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """((model, optimD, optimG, lr), runs) for every GAN model's sub-grids."""
    out = []
    for m in (m for m in models(df) if family_of(m) == "gan"):
        out += [((m, *key), sub) for key, sub in of_model(df, m).groupby(SUBGRID, sort=True)]
    return out


def figure3(df: pd.DataFrame, real_i_prime: float | None = None, x: XAxis = I_AXIS) -> plt.Figure:
    df = with_models(df)
    panels = figure3_panels(df)
    fig, axes = _panels(len(panels), 3.4, 2.7, sharex=True, sharey=True)
    several = len({key[0] for key, _ in panels}) > 1
    ms = models(df)
    legend_done = set()
    for ax, ((m, od, og, lr), sub) in zip(axes, panels):
        _hist(ax, sub, m, n_label=False, x=x)
        ref = reference_of(m, ms)  # the EBGAN of the same arch, the same in each of its panels
        if ref:
            _hist(ax, of_model(df, ref), ref, n_label=False, reference=True, x=x)
        if m not in legend_done:  # one legend per GAN model, on its first panel
            _non_digit_legend(ax, loc="upper right", frameon=False, fontsize=7.5)
            legend_done.add(m)
        name = f"{model_label(m)}\n" if several else ""
        ax.set_title(f"{name}optimD {od}, optimG {og}, lr {lr:g}  (n={len(sub)})", fontsize=8.5)
        _axes_labels(ax, real_i_prime, x)
    _label_outer(axes)
    fig.suptitle("Figure 3: GAN runs by (optimD, optimG, lr), the EBGAN of the same arch as reference")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


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


def figure4(df: pd.DataFrame, samples: dict[str, np.ndarray]) -> plt.Figure:
    """samples: point_id -> (64, 32, 32) uint8, for the best runs. Every model with finished
    runs gets a panel; one whose runs draw no digits says so instead of showing noise."""
    df = with_models(df)
    best = best_runs(df)
    scored = has_digit_share(df)
    shown = [m for m in models(df) if df.loc[df["model"] == m, "status"].isin(FINISHED).any()]
    fig, axes = _panels(max(len(shown), 1), 4.2, 4.8, layout="constrained")
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
        imgs = samples.get(row["point_id"])
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
    fig.suptitle(f"Figure 4: samples of the best run of each model, {rule} (final epoch, fixed noise)")
    return fig


def tile(imgs: np.ndarray, ncol: int = 8, pad: int = 2) -> np.ndarray:
    """(N, H, W) uint8 -> one (rows*(H+pad)+pad, ncol*(W+pad)+pad) image with white gaps."""
    n, h, w = imgs.shape
    nrow = math.ceil(n / ncol)
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = imgs[i]
    return out


def budget_figure(df: pd.DataFrame, real_i_prime: float | None = None) -> plt.Figure:
    table = budget_table(df)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m, sub in table.groupby("model", sort=False):
        ax.plot(sub["k"], sub["expected_best_i_prime"], color=_color(m), linewidth=1.6,
                label=f"{model_label(m)} (n={len(sub)})", **_style(m))
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
                  label: str = "I'", title: str = "Training curves") -> plt.Figure:
    """Median of a per-epoch metric for each model, with the interquartile band."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
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
            ax.plot(q.index, q[0.5], marker="o", color=_color(m), label=model_label(m), **_style(m))
            ax.fill_between(q.index, q[0.25], q[0.75], color=_color(m), alpha=alpha)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{label} (median, interquartile band)")
    if ax.lines:
        ax.legend(frameon=False)


def has_began_curves(curves: pd.DataFrame) -> bool:
    return not curves.empty and "m_global" in curves.columns and curves["m_global"].notna().any()


def final_vs_best_figure(df: pd.DataFrame, real_i_prime: float | None = None, x: XAxis = I_AXIS) -> plt.Figure:
    """Per model: the final epoch's I' (filled, as Figure 2) against each run's best epoch
    (outlined; a diverged run keeps its best epoch before it). Far apart: the runs peaked and fell."""
    df = with_models(df)
    ms = models(df)
    fig, axes = _panels(len(ms), 3.4, 2.8, sharex=True, sharey=True)
    for ax, m in zip(axes, ms):
        runs = of_model(df, m)
        final, best = finished_scores(runs), best_scores(runs)
        ax.stairs(x.bin(final)[1], x.edges, fill=True, alpha=0.45, color=_color(m), label="final epoch")
        ax.stairs(x.bin(best)[1], x.edges, color="k", linewidth=1.2, label="best epoch")
        ax.set_title(f"{model_label(m)} (n={len(final)})\nmedian final {final.median():.2f}, best {best.median():.2f}"
                     if len(final) else model_label(m), fontsize=8.5)
        _axes_labels(ax, real_i_prime, x)
        ax.legend(loc="upper right", frameon=False, fontsize=7.5)
    _label_outer(axes)
    fig.suptitle("Final vs best-epoch I' of every finished run")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def convergence_figure(curves: pd.DataFrame, df: pd.DataFrame) -> plt.Figure:
    """Left: each model's median I' per epoch over its ok runs (with the interquartile band).
    Right: each ok run's relative rise of I' over its last epoch, the STILL_RISING line marked."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    _median_curves(ax, curves, df[df["status"] == OK], "i_prime", "I' of ok runs")
    ax.set_title("Median I' per epoch")
    rise = last_rise(curves, df)
    model_of = with_models(df).set_index("point_id")["model"]
    ms = [m for m in models(df) if (rise.index.map(model_of) == m).any()]
    for i, m in enumerate(ms):
        r = rise[rise.index.map(model_of) == m].clip(-1.0, 2.0) * 100  # inf (risen from 0) at the top
        jitter = np.linspace(-0.2, 0.2, len(r)) if len(r) > 1 else [0.0]
        ax2.scatter(np.full(len(r), i) + jitter, r, s=14, color=_color(m), alpha=0.8)
        share = (rise[rise.index.map(model_of) == m] > STILL_RISING).mean()
        ax2.text(i, 205, f"{share:.0%}", ha="center", va="bottom", fontsize=8)
    ax2.axhline(100 * STILL_RISING, color="k", linestyle=":", linewidth=1)
    ax2.set_xticks(range(len(ms)), [model_label(m) for m in ms])
    ax2.set_ylim(-105, 230)
    ax2.set_ylabel("rise of I' over the last epoch (%)")
    ax2.set_title(f"Still rising: share of ok runs above +{STILL_RISING:.0%} (dotted)")
    fig.tight_layout()
    return fig


VARIANT_COLORS = {"dropout, code dropped": "#1f77b4", "dropout, code kept": "#ff7f0e", "no dropout": "#2ca02c"}


def margin_figure(df: pd.DataFrame, curves: pd.DataFrame) -> plt.Figure:
    """One panel per (energy_norm, margin) of the hinged families' ok runs: the median over
    runs of each epoch's mean D(x) (solid) and D(G(z)) (dashed), per dropout variant, against
    m (black). The paper's equilibrium has D(x) below m, D(G(z)) at or above it."""
    runs = margin_runs(df, curves)
    runs = runs[runs["status"] == OK]
    groups = list(runs.groupby(MARGIN_GROUP, sort=True)) if len(runs) else []
    fig, axes = _panels(max(len(groups), 1), 3.6, 2.9)
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


def margin_hist_figure(df: pd.DataFrame, curves: pd.DataFrame, real_i_prime: float | None = None,
                       x: XAxis = I_AXIS) -> plt.Figure:
    """One panel per energy_norm: the I' histogram of the hinged families' finished runs at
    each margin (outlined, darker for larger m)."""
    runs = margin_runs(df, curves)
    norms = sorted(runs["energy_norm"].unique()) if len(runs) else []
    fig, axes = _panels(max(len(norms), 1), 3.6, 2.9, sharey=True)
    for ax, norm in zip(axes, norms):
        sub = runs[runs["energy_norm"] == norm]
        margins = sorted(sub["margin"].unique())
        shades = plt.cm.viridis(np.linspace(0.85, 0.1, len(margins)))
        for shade, margin in zip(shades, margins):
            s = sub.loc[sub["margin"] == margin, "score"]
            ax.stairs(x.bin(s)[1], x.edges, color=shade, linewidth=1.6,
                      label=f"m = {margin:g} (n={len(s)}, median {s.median():.2f})")
        ax.set_title(norm, fontsize=8.5)
        _axes_labels(ax, real_i_prime, x)
        ax.legend(frameon=False, fontsize=7)
    fig.suptitle("EBGAN I' per margin, for each energy norm")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig
