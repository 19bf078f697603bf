"""Numbers behind the report: histograms, the stability table, the EBGAN-vs-GAN test, budgets.

Conventions (documented in the report too):
  * A *finished* run is `ok` or `diverged`; `error` and `pending` runs have no score
    and are counted, never plotted.
  * A diverged run's score is I' = 0: its generator no longer produces images, which
    is the worst score I' gives (a single-class or noise generator scores ~0 too).
  * I' histograms use the fixed edges `I_PRIME_EDGES` (0 to 14 in steps of 0.5, so
    every panel and every report share them); scores above 14 fall in the last bin.
  * A run has *failed* when its I' is below `FAILURE_I_PRIME` = 1.0 (the real MNIST
    test set scores 13.3 with the committed classifier, one digit class alone 0.03).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

I_PRIME_EDGES = np.arange(0.0, 14.0 + 1e-9, 0.5)
FAILURE_I_PRIME = 1.0
FINISHED = ("ok", "diverged")
FAMILY_ORDER = ("gan", "ebgan", "ebgan_pt", "began")
FAMILY_LABEL = {"gan": "GAN", "ebgan": "EBGAN", "ebgan_pt": "EBGAN-PT", "began": "BEGAN"}
SUBGRID = ["optimD", "optimG", "lr"]


def finished_scores(df: pd.DataFrame, col: str = "i_prime") -> pd.Series:
    """Scores of the finished runs, diverged ones as 0."""
    fin = df[df["status"].isin(FINISHED)]
    return fin[col].where(fin["status"] == "ok", 0.0).fillna(0.0)


def families(df: pd.DataFrame) -> list[str]:
    present = set(df["family"])
    return [f for f in FAMILY_ORDER if f in present] + sorted(present - set(FAMILY_ORDER))


def histogram_percent(scores: pd.Series | np.ndarray, edges=I_PRIME_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """(counts per bin, percent of the runs per bin); values past the edges are clipped in."""
    x = np.clip(np.asarray(scores, dtype=float), edges[0], edges[-1])
    counts, _ = np.histogram(x, bins=edges)
    total = counts.sum()
    return counts, (100.0 * counts / total if total else np.zeros(len(counts)))


FIGURE2_PANELS = {
    "(a) all runs": lambda d: d,
    "(b) nLayerG <= 4 and nLayerD <= 4": lambda d: d[(d["nLayerG"] <= 4) & (d["nLayerD"] <= 4)],
    "(c) nLayerG <= 3 and nLayerD <= 3": lambda d: d[(d["nLayerG"] <= 3) & (d["nLayerD"] <= 3)],
}


def figure2_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Long table: panel, family, bin_lo, bin_hi, count, percent (what Figure 2 draws)."""
    rows = []
    for panel, select in FIGURE2_PANELS.items():
        sub = select(df)
        for fam in families(df):
            counts, pct = histogram_percent(finished_scores(sub[sub["family"] == fam]))
            for i, (c, p) in enumerate(zip(counts, pct)):
                rows.append({"panel": panel, "family": fam, "bin_lo": I_PRIME_EDGES[i],
                             "bin_hi": I_PRIME_EDGES[i + 1], "count": int(c), "percent": float(p)})
    return pd.DataFrame(rows)


def _summary(sub: pd.DataFrame) -> dict:
    s = finished_scores(sub)
    fin = sub[sub["status"].isin(FINISHED)]
    ok = sub[sub["status"] == "ok"]
    q = s.quantile([0.25, 0.5, 0.75]) if len(s) else pd.Series([math.nan] * 3, index=[0.25, 0.5, 0.75])
    return {
        "runs": len(sub), "finished": len(fin),
        "diverged": int((sub["status"] == "diverged").sum()),
        "errored": int((sub["status"] == "error").sum()),
        "pending": int((sub["status"] == "pending").sum()),
        "i_prime_q1": q[0.25], "i_prime_median": q[0.5], "i_prime_q3": q[0.75],
        "failure_share": float((s < FAILURE_I_PRIME).mean()) if len(s) else math.nan,
        "is_median": float(ok["inception_score"].median()) if len(ok) else math.nan,
        "fid_median": float(ok["fid"].median()) if len(ok) else math.nan,
        "classes_median": float(ok["classes_covered"].median()) if len(ok) else math.nan,
    }


def stability_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per family, then one per GAN (optimD, optimG, lr) sub-grid."""
    rows = [{"group": FAMILY_LABEL.get(f, f), **_summary(df[df["family"] == f])} for f in families(df)]
    gan = df[df["family"] == "gan"]
    for (od, og, lr), sub in gan.groupby(SUBGRID, sort=True):
        rows.append({"group": f"GAN D:{od} G:{og} lr {lr:g}", **_summary(sub)})
    return pd.DataFrame(rows)


def mann_whitney(x, y) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test (normal approximation, tie-corrected): (U of x, p-value).

    Chosen because I' distributions are skewed and full of ties at 0; it asks whether
    a random run of one family outscores a random run of the other.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan
    allv = np.concatenate([x, y])
    ranks = pd.Series(allv).rank(method="average").to_numpy()
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    n = n1 + n2
    _, tie_counts = np.unique(allv, return_counts=True)
    tie_term = (tie_counts ** 3 - tie_counts).sum() / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12 * ((n + 1) - tie_term)
    if var <= 0:
        return float(u1), 1.0
    z = (u1 - n1 * n2 / 2) / math.sqrt(var)
    # continuity correction towards the mean
    z = math.copysign(max(abs(z) - 0.5 / math.sqrt(var), 0.0), z)
    return float(u1), math.erfc(abs(z) / math.sqrt(2))


def ebgan_vs_gan_tests(df: pd.DataFrame) -> pd.DataFrame:
    gan = finished_scores(df[df["family"] == "gan"])
    rows = []
    for fam in ("ebgan", "ebgan_pt", "began"):
        other = finished_scores(df[df["family"] == fam])
        if len(other) and len(gan):
            u, p = mann_whitney(other, gan)
            rows.append({"comparison": f"{FAMILY_LABEL[fam]} vs GAN", "n_a": len(other), "n_b": len(gan),
                         "median_a": float(other.median()), "median_b": float(gan.median()),
                         "prob_a_beats_b": u / (len(other) * len(gan)), "p_value": p})
    return pd.DataFrame(rows)


def expected_best_of_k(scores) -> np.ndarray:
    """E[max of k runs drawn without replacement from `scores`], for k = 1..n.

    With x_(1) <= ... <= x_(n) sorted, the k-draw maximum is x_(i) with probability
    C(i-1, k-1) / C(n, k) (Kurach et al. 2019's budget view, computed exactly).
    """
    x = np.sort(np.asarray(scores, dtype=float))
    n = len(x)
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])  # log m!, m = 0..n

    def log_comb(a, b):
        return logfact[a] - logfact[b] - logfact[a - b]

    out = np.empty(n)
    for k in range(1, n + 1):
        i = np.arange(k, n + 1)  # the k-draw maximum is at least the k-th smallest
        w = np.exp(log_comb(i - 1, k - 1) - log_comb(n, k))
        out[k - 1] = float((w * x[k - 1:]).sum())
    return out


def budget_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for fam in families(df):
        s = finished_scores(df[df["family"] == fam])
        for k, e in enumerate(expected_best_of_k(s), start=1):
            rows.append({"family": fam, "k": k, "expected_best_i_prime": e})
    return pd.DataFrame(rows)
