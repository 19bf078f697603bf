"""The paper's figures, redrawn from a results table. Each function returns a matplotlib Figure.

    from analysis.load import load_run
    from analysis import figures
    run = load_run("runs/mini-...")
    figures.figure2(run.results).savefig("fig2.png")

Figure 2: I' histograms, percent of each family's runs per bin, three panels.
Figure 3: one panel per GAN (optimD, optimG, lr) sub-grid, EBGAN as reference.
Figure 4: samples of the best run (highest final I') of each family. The samples
          are the 64 images from fixed noise that every trial saves at its last
          evaluation (RUN_DIR/samples/<point_id>.npy), so no generator is rebuilt.
Budget:   expected best I' among k runs drawn at random from a family's grid.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.stats import (FAMILY_LABEL, FIGURE2_PANELS, I_PRIME_EDGES, SUBGRID,  # noqa: E402
                            budget_table, families, finished_scores, histogram_percent)

COLORS = {"gan": "#d62728", "ebgan": "#1f77b4", "ebgan_pt": "#2ca02c", "began": "#9467bd"}
plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
                     "axes.grid": True, "grid.alpha": 0.25, "font.size": 9})


def _hist(ax, scores, family: str, n_label: bool = True, reference: bool = False):
    _, pct = histogram_percent(scores)
    label = f"{FAMILY_LABEL.get(family, family)} (n={len(scores)})" if n_label else FAMILY_LABEL.get(family, family)
    if reference:
        ax.stairs(pct, I_PRIME_EDGES, color=COLORS.get(family, "k"), linewidth=1.6, label=label)
    else:
        ax.stairs(pct, I_PRIME_EDGES, fill=True, alpha=0.45, color=COLORS.get(family, "gray"), label=label)
        ax.stairs(pct, I_PRIME_EDGES, color=COLORS.get(family, "gray"), linewidth=1.0)


def _axes_labels(ax, real_i_prime: float | None):
    ax.set_xlim(I_PRIME_EDGES[0], I_PRIME_EDGES[-1])
    ax.set_xlabel("I' (modified inception score; higher is better)")
    ax.set_ylabel("% of the family's runs")
    if real_i_prime is not None and math.isfinite(real_i_prime):
        ax.axvline(min(real_i_prime, I_PRIME_EDGES[-1]), color="k", linestyle=":", linewidth=1)


def figure2(df: pd.DataFrame, real_i_prime: float | None = None) -> plt.Figure:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, (title, select) in zip(axes, FIGURE2_PANELS.items()):
        sub = select(df)
        for fam in families(df):
            _hist(ax, finished_scores(sub[sub["family"] == fam]), fam)
        ax.set_title(title)
        _axes_labels(ax, real_i_prime)
        ax.legend(loc="upper right", frameon=False)
    fig.suptitle("Figure 2: I' of finished runs, GAN vs EBGAN" +
                 ("  (dotted: real MNIST test set)" if real_i_prime else ""))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def figure3_panels(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    gan = df[df["family"] == "gan"]
    return [(key, sub) for key, sub in gan.groupby(SUBGRID, sort=True)]


def figure3(df: pd.DataFrame, real_i_prime: float | None = None) -> plt.Figure:
    panels = figure3_panels(df)
    ncol = 4 if len(panels) > 4 else max(1, len(panels))
    nrow = max(1, math.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.7 * nrow), sharex=True, sharey=True,
                             squeeze=False)
    ref = finished_scores(df[df["family"] == "ebgan"])
    for ax, ((od, og, lr), sub) in zip(axes.flat, panels):
        _hist(ax, finished_scores(sub), "gan", n_label=False)
        if len(ref):
            _hist(ax, ref, "ebgan", n_label=False, reference=True)
        ax.set_title(f"optimD {od}, optimG {og}, lr {lr:g}  (n={len(sub)})", fontsize=8.5)
        _axes_labels(ax, real_i_prime)
        ax.label_outer()
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if panels:
        axes.flat[0].legend(loc="upper right", frameon=False, fontsize=8)
    fig.suptitle(f"Figure 3: GAN runs by (optimD, optimG, lr), EBGAN (n={len(ref)}) as reference")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def best_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The run with the highest final I' of each family (ok runs only)."""
    ok = df[df["status"] == "ok"].dropna(subset=["i_prime"])
    idx = ok.groupby("family")["i_prime"].idxmax()
    best = ok.loc[idx]
    return best.set_index("family").loc[[f for f in families(df) if f in best["family"].values]]


def figure4(df: pd.DataFrame, samples: dict[str, np.ndarray]) -> plt.Figure:
    """samples: point_id -> (64, 32, 32) uint8, for the best runs."""
    best = best_runs(df)
    fig, axes = plt.subplots(1, max(1, len(best)), figsize=(4.2 * max(1, len(best)), 4.6), squeeze=False)
    for ax, (fam, row) in zip(axes.flat, best.iterrows()):
        imgs = samples.get(row["point_id"])
        ax.set_axis_off()
        if imgs is None:
            ax.text(0.5, 0.5, "samples not saved", ha="center", va="center")
        else:
            ax.imshow(tile(imgs), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{FAMILY_LABEL.get(fam, fam)}: I' {row['i_prime']:.2f}\n"
                     f"G {row['nLayerG']}x{row['sizeG']}, D {row['nLayerD']}x{row['sizeD']}, "
                     f"{'dropout' if row['dropoutD'] else 'no dropout'}, "
                     f"{row['optimD']}/{row['optimG']} lr {row['lr']:g}", fontsize=8.5)
    fig.suptitle("Figure 4: samples of the best run of each family (final epoch, fixed noise)")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
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
    for fam, sub in table.groupby("family", sort=False):
        ax.plot(sub["k"], sub["expected_best_i_prime"], color=COLORS.get(fam), linewidth=1.6,
                label=f"{FAMILY_LABEL.get(fam, fam)} (n={len(sub)})")
    if len(table) and table["k"].max() > 20:
        ax.set_xscale("log")
    if real_i_prime:
        ax.axhline(real_i_prime, color="k", linestyle=":", linewidth=1, label="real MNIST test set")
    ax.set_xlabel("k: runs drawn at random from the family's grid")
    ax.set_ylabel("expected best I' of the k runs")
    ax.set_title("Budget: what k random configurations buy (Kurach et al. 2019)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def curves_figure(curves: pd.DataFrame, results: pd.DataFrame, metric: str = "i_prime",
                  label: str = "I'", title: str = "Training curves") -> plt.Figure:
    """Median of a per-epoch metric for each family, with the interquartile band."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if not curves.empty and metric in curves.columns:
        fam_of = results.set_index("point_id")["family"]
        c = curves.assign(family=curves["point_id"].map(fam_of)).dropna(subset=[metric])
        for fam, sub in c.groupby("family", sort=False):
            q = sub.groupby("epoch")[metric].quantile([0.25, 0.5, 0.75]).unstack()
            ax.plot(q.index, q[0.5], marker="o", color=COLORS.get(fam), label=FAMILY_LABEL.get(fam, fam))
            ax.fill_between(q.index, q[0.25], q[0.75], color=COLORS.get(fam), alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{label} (median, interquartile band)")
    ax.set_title(title)
    if ax.lines:
        ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def has_began_curves(curves: pd.DataFrame) -> bool:
    return not curves.empty and "m_global" in curves.columns and curves["m_global"].notna().any()
