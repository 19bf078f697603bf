"""How every figure draws: its style, histogram x axes, a model's colours, panels and histograms.

Figures are matplotlib `Figure`s built without pyplot, under the house style (`styled`), so
importing gansweep's analysis changes nothing in a notebook's own matplotlib state (no backend
is chosen and no rcParams are set globally).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import matplotlib
import matplotlib.patches
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.stats import (DIGITS_RUN_SHARE, I_PRIME_EDGES, arch_of, family_of, finished_scores,
                            histogram_percent, model_label, non_digit_scores)

STYLE = {"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.25, "font.size": 9}


def styled(draw):
    """A figure function drawn under STYLE (matplotlib's rc_context), leaving the caller's as it was."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


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


def color(model: str) -> str:
    """The family's colour (its registry entry); gray for a plugin family not loaded here."""
    # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
    from models.losses import FAMILIES

    fam = family_of(model)
    return FAMILIES[fam].color if fam in FAMILIES else "gray"


def line_style(model: str) -> dict:
    """The paper's nets solid; other archs hatched and dashed, same colour as their family."""
    return {} if arch_of(model) == "mlp" else {"linestyle": "--"}


def hist(ax, runs: pd.DataFrame, model: str, n_label: bool = True, reference: bool = False,
         x: XAxis = I_AXIS):
    """One model's I' histogram of `runs` (percent of its finished runs per bin). Filled, the
    part of each bin that is non-digit runs is stacked at its foot, cross-hatched in black."""
    scores = finished_scores(runs)
    _, pct = x.bin(scores)
    text = f"{model_label(model)} (n={len(scores)})" if n_label else model_label(model)
    if reference:
        ax.stairs(pct, x.edges, color=color(model), linewidth=1.6, label=text, **line_style(model))
        return
    hatch = None if arch_of(model) == "mlp" else "///"
    ax.stairs(pct, x.edges, fill=True, alpha=0.45 if hatch is None else 0.25, hatch=hatch,
              color=color(model), label=text)
    ax.stairs(pct, x.edges, color=color(model), linewidth=1.0, **line_style(model))
    non_digit, _ = x.bin(non_digit_scores(runs))
    if non_digit.any():
        ax.stairs(100.0 * non_digit / len(scores), x.edges, fill=False, hatch="xxxx",
                  edgecolor=color(model), linewidth=0.0)


def non_digit_legend(ax, **kw) -> None:
    """The legend, with one entry for the cross-hatched non-digit stacks when a panel has any."""
    handles, labels = ax.get_legend_handles_labels()
    if any(p.get_hatch() == "xxxx" for p in ax.patches):
        handles.append(matplotlib.patches.Patch(facecolor="none", edgecolor="0.3", hatch="xxxx"))
        labels.append(f"of which non-digit runs (digit_share < {DIGITS_RUN_SHARE:g})")
    if handles:
        ax.legend(handles, labels, **kw)


def axes_labels(ax, real_i_prime: float | None, x: XAxis = I_AXIS):
    ax.set_xlim(x.edges[0], x.edges[-1])
    ax.set_xlabel(x.label)
    ax.set_ylabel("% of the model's runs")
    if real_i_prime is not None and math.isfinite(real_i_prime):
        ax.axvline(min(real_i_prime / x.scale, x.edges[-1]), color="k", linestyle=":", linewidth=1)


def panels(n: int, width: float, height: float, layout: str | None = None, **subplots_kw) -> tuple[Figure, list]:
    """A figure of n panels of width x height inches, at most 4 a row (wider rows stop being
    readable on a page); returns the figure and its n axes in reading order, spare cells hidden."""
    ncol = min(4, max(1, n))
    nrow = max(1, math.ceil(n / ncol))
    fig = Figure(figsize=(width * ncol, height * nrow), layout=layout)
    flat = list(fig.subplots(nrow, ncol, squeeze=False, **subplots_kw).flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def label_outer(axes: list) -> None:
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


def finish_panels(fig: Figure, axes: list, title: str, top: float) -> Figure:
    """A panel figure's last touches: axis labels on the outer panels, its title above them."""
    label_outer(axes)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig
