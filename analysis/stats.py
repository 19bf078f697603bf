"""Numbers behind the report: histograms, the stability table, the EBGAN-vs-GAN test, budgets.

Conventions (documented in the report too):
  * A *finished* run is `ok` or `diverged`; `error` and `pending` runs have no score
    and are counted, never plotted.
  * A diverged run's score is I' = 0: its generator no longer produces images, which
    is the worst score I' gives (a single-class or noise generator scores ~0 too).
  * I' histograms use the fixed edges `I_PRIME_EDGES` (0 to 14 in steps of 0.5, so
    every panel and every report share them); scores above 14 fall in the last bin.
  * A run has *failed* when its I' is below `FAILURE_I_PRIME` = 1.0 (the real MNIST
    test set scores 11.0 with the committed classifier, one digit class alone 0.03).
  * Runs are compared by *model*: the family for the paper's fully-connected nets
    ("ebgan"), family-arch for the others ("ebgan-dcgan"; sweep/plan/config.py).
  * A run *draws digits* when at least DIGITS_RUN_SHARE = 0.5 of its scored samples
    pass the classifier's digit test (`digit_share`, models/classifier.py). A finished
    run that does not is a *non-digit* run: whatever its I', it draws something else
    (noise, blobs, scraps), and the histograms hatch its share of each bin. Tables
    scored before digit_share existed have no such column: nothing is hatched then.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sweep.plan.config import model_name
from sweep.plan.subset import FIGURE3_CELL
from sweep.record.results import with_models
from sweep.record.schema import DIVERGED, ERROR, FINISHED, OK, PENDING

I_PRIME_EDGES = np.arange(0.0, 14.0 + 1e-9, 0.5)
FAILURE_I_PRIME = 1.0
DIGITS_RUN_SHARE = 0.5
SUBGRID = list(FIGURE3_CELL)  # Figure 3: one GAN histogram per cell


def family_of(model: str) -> str:
    return model.split("-", 1)[0]


def arch_of(model: str) -> str:
    return model.split("-", 1)[1] if "-" in model else "mlp"


def model_label(model: str) -> str:
    """"EBGAN" for the paper's nets, "EBGAN (DCGAN)" for the conv ones."""
    # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
    from models.archs import ARCHS
    from models.losses import FAMILIES

    fam, arch = family_of(model), arch_of(model)
    text = FAMILIES[fam].label if fam in FAMILIES else fam  # a table of a plugin not loaded here: its name
    return text if arch == "mlp" else f"{text} ({ARCHS[arch].label if arch in ARCHS else arch})"


def models(df: pd.DataFrame) -> list[str]:
    """The models present, by family (in registration order, models/losses.py), the paper's mlp
    before other archs."""
    # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
    from models.losses import FAMILIES

    present = set(with_models(df)["model"])
    fam_rank = {f: i for i, f in enumerate(FAMILIES)}
    return sorted(present, key=lambda m: (fam_rank.get(family_of(m), len(fam_rank)), family_of(m),
                                          arch_of(m) != "mlp", arch_of(m)))


def of_model(df: pd.DataFrame, model: str) -> pd.DataFrame:
    df = with_models(df)
    return df[df["model"] == model]


def finished_scores(df: pd.DataFrame, col: str = "i_prime") -> pd.Series:
    """Scores of the finished runs, diverged ones as 0."""
    fin = df[df["status"].isin(FINISHED)]
    return fin[col].where(fin["status"] == OK, 0.0).fillna(0.0)


def has_digit_share(df: pd.DataFrame) -> bool:
    """Whether the table was scored with the digit test (older tables lack the column)."""
    return "digit_share" in df.columns and df["digit_share"].notna().any()


def draws_digits(df: pd.DataFrame) -> pd.Series:
    """Per finished run (index of finished_scores): True when it is ok and its final
    digit_share reaches DIGITS_RUN_SHARE; diverged runs draw nothing."""
    fin = df[df["status"].isin(FINISHED)]
    if "digit_share" not in fin.columns:
        return pd.Series(False, index=fin.index)
    return (fin["status"] == OK) & (fin["digit_share"] >= DIGITS_RUN_SHARE)


def non_digit_scores(df: pd.DataFrame) -> pd.Series:
    """finished_scores of the ok runs whose digit_share is below DIGITS_RUN_SHARE (a run
    without a digit_share, from an older table, is not counted as non-digit)."""
    s = finished_scores(df)
    if "digit_share" not in df.columns:
        return s.iloc[:0]
    fin = df.loc[s.index]
    return s[(fin["status"] == OK) & (fin["digit_share"] < DIGITS_RUN_SHARE)]


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
    """Long table: panel, model, bin_lo, bin_hi, count, percent, non_digit_count (what Figure 2
    draws: the count of a bin's runs that finished ok without drawing digits)."""
    df = with_models(df)  # derive the model column once, not in every of_model call
    rows = []
    for panel, select in FIGURE2_PANELS.items():
        sub = select(df)
        for m in models(df):
            runs = of_model(sub, m)
            counts, pct = histogram_percent(finished_scores(runs))
            non_digit, _ = histogram_percent(non_digit_scores(runs))
            for i, (c, p) in enumerate(zip(counts, pct)):
                rows.append({"panel": panel, "model": m, "bin_lo": I_PRIME_EDGES[i],
                             "bin_hi": I_PRIME_EDGES[i + 1], "count": int(c), "percent": float(p),
                             "non_digit_count": int(non_digit[i])})
    return pd.DataFrame(rows)


def _summary(sub: pd.DataFrame, scored: bool) -> dict:
    """scored: the table has digit_share (has_digit_share of the whole table)."""
    s = finished_scores(sub)
    fin = sub[sub["status"].isin(FINISHED)]
    ok = sub[sub["status"] == OK]
    q = s.quantile([0.25, 0.5, 0.75]) if len(s) else pd.Series([math.nan] * 3, index=[0.25, 0.5, 0.75])
    return {
        "runs": len(sub), "finished": len(fin),
        "diverged": int((sub["status"] == DIVERGED).sum()),
        "errored": int((sub["status"] == ERROR).sum()),
        "pending": int((sub["status"] == PENDING).sum()),
        "i_prime_q1": q[0.25], "i_prime_median": q[0.5], "i_prime_q3": q[0.75],
        "failure_share": float((s < FAILURE_I_PRIME).mean()) if len(s) else math.nan,
        "is_median": float(ok["inception_score"].median()) if len(ok) else math.nan,
        "fid_median": float(ok["fid"].median()) if len(ok) else math.nan,
        "classes_median": float(ok["classes_covered"].median()) if len(ok) else math.nan,
        # the digit test: NaN for tables scored before it existed
        "digit_share_median": float(ok["digit_share"].median()) if len(ok) and scored else math.nan,
        "draws_digits_share": float(draws_digits(sub).mean()) if len(fin) and scored else math.nan,
    }


def stability_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model, then one per GAN model's (optimD, optimG, lr) sub-grid."""
    df = with_models(df)  # derive the model column once, not in every of_model call
    ms = models(df)
    scored = has_digit_share(df)
    rows = [{"group": model_label(m), **_summary(of_model(df, m), scored)} for m in ms]
    for m in (m for m in ms if family_of(m) == "gan"):
        for (od, og, lr), sub in of_model(df, m).groupby(SUBGRID, sort=True):
            rows.append({"group": f"{model_label(m)} D:{od} G:{og} lr {lr:g}", **_summary(sub, scored)})
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
    """Each energy-based model against the GAN of the same arch; then, where a family
    was run on both, its DCGAN nets against its fully-connected ones."""
    df = with_models(df)  # derive the model column once, not in every of_model call
    ms = models(df)
    pairs = [(m, model_name("gan", arch_of(m))) for m in ms if family_of(m) != "gan"]
    pairs += [(m, family_of(m)) for m in ms if arch_of(m) != "mlp"]
    rows = []
    for a, b in pairs:
        sa, sb = finished_scores(of_model(df, a)), finished_scores(of_model(df, b))
        if len(sa) and len(sb):
            u, p = mann_whitney(sa, sb)
            rows.append({"comparison": f"{model_label(a)} vs {model_label(b)}", "n_a": len(sa), "n_b": len(sb),
                         "median_a": float(sa.median()), "median_b": float(sb.median()),
                         "prob_a_beats_b": u / (len(sa) * len(sb)), "p_value": p})
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
    df = with_models(df)  # derive the model column once, not in every of_model call
    rows = []
    for m in models(df):
        s = finished_scores(of_model(df, m))
        for k, e in enumerate(expected_best_of_k(s), start=1):
            rows.append({"model": m, "k": k, "expected_best_i_prime": e})
    return pd.DataFrame(rows)


# --- convergence: was the budget enough? ----------------------------------------
STILL_RISING = 0.10  # a run still rises when its I' grew by more than 10% over the last third of its epochs
LATE_SHARE = 2 / 3  # the rise is measured from the last scored epoch at or before this share of the last


def reference_epoch(epochs) -> int:
    """The epoch a late rise is measured from: the last scored epoch at or before LATE_SHARE of the
    last one (epoch 4 of 6, 2 of 3), else the first. Over the last scored interval alone, a budget
    scored often read as levelled: paper-sample's GANs rose 2% in median over their last 624 steps
    while the budget study's rose 18-42% between 6,240 and 9,984 steps (issue 42)."""
    epochs = sorted(int(e) for e in epochs)
    before = [e for e in epochs[:-1] if e <= LATE_SHARE * epochs[-1]]
    return before[-1] if before else epochs[0]


def ok_curves(curves: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch rows of the runs that finished ok, with their model, in epoch order."""
    df = with_models(df)
    model_of = df[df["status"] == OK].set_index("point_id")["model"]
    c = curves[curves["point_id"].isin(model_of.index)]
    return c.assign(model=c["point_id"].map(model_of)).sort_values(["point_id", "epoch"])


def last_rise(curves: pd.DataFrame, df: pd.DataFrame) -> pd.Series:
    """Per ok run with two scored epochs or more: the relative rise of I' over the last third of its
    training, (I'_last - I'_ref) / I'_ref from its reference_epoch (inf when it rose from 0)."""
    c = ok_curves(curves, df).dropna(subset=["i_prime"])
    ends = {}
    for pid, g in c.groupby("point_id"):
        if len(g) >= 2:
            by_epoch = dict(zip(g["epoch"].astype(int), g["i_prime"]))
            ends[pid] = (by_epoch[reference_epoch(by_epoch)], by_epoch[max(by_epoch)])
    before = pd.Series({p: b for p, (b, _) in ends.items()}, dtype=float)
    last = pd.Series({p: a for p, (_, a) in ends.items()}, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = (last - before) / before
    return rise.where(before > 0, np.where(last > 0, np.inf, 0.0)).astype(float)


def median_curves(curves: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """model, epoch, runs, median I' (over the model's ok runs), per scored epoch."""
    c = ok_curves(curves, df)
    rows = []
    for m in models(df):
        for epoch, sub in c[c["model"] == m].groupby("epoch"):
            rows.append({"model": m, "epoch": int(epoch), "runs": int(sub["i_prime"].notna().sum()),
                         "median_i_prime": float(sub["i_prime"].median())})
    return pd.DataFrame(rows, columns=["model", "epoch", "runs", "median_i_prime"])


def convergence_table(curves: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Per model: training steps, its median I' at its reference epoch and at its last scored epoch
    and the median's rise, and the share of its ok runs whose own I' still rose by more than
    STILL_RISING over the same last third (last_rise)."""
    df = with_models(df)
    med, rise = median_curves(curves, df), last_rise(curves, df)
    model_of = df.set_index("point_id")["model"]
    rows = []
    for m in models(df):
        mc = med[med["model"] == m]
        if len(mc) < 2:
            continue
        runs = of_model(df, m)
        steps = (runs["epochs"] * (runs["n_train"] // runs["batch_size"])).median()
        ref = reference_epoch(mc["epoch"])
        before, last = float(mc.loc[mc["epoch"] == ref, "median_i_prime"].iloc[0]), mc["median_i_prime"].iloc[-1]
        r = rise[rise.index.map(model_of) == m]
        rows.append({"model": model_label(m), "ok_runs": len(r), "steps": int(steps),
                     "epoch_before": ref, "epochs": int(mc["epoch"].iloc[-1]), "median_before": before,
                     "median_last": last,
                     "median_rise": (last - before) / before if before > 0 else math.nan,
                     "still_rising_share": float((r > STILL_RISING).mean()) if len(r) else math.nan})
    return pd.DataFrame(rows)


def best_scores(df: pd.DataFrame) -> pd.Series:
    """Best-epoch I' of the finished runs (a diverged run keeps its best epoch before it; 0 if none).
    A table without best_i_prime (hand-made ones) gives the final scores."""
    if "best_i_prime" not in df.columns:
        return finished_scores(df)
    fin = df[df["status"].isin(FINISHED)]
    return fin["best_i_prime"].fillna(0.0)


# --- the margin: where do the energies sit against m? ---------------------------
def hinged_families() -> tuple[str, ...]:
    """Families whose D loss is hinged at the margin m (models/losses.py)."""
    # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
    from models.losses import FAMILIES

    return tuple(name for name, f in FAMILIES.items() if f.hinged)


def dropout_variant(row) -> str:
    """How a run's D drops out: on the code too, everywhere but the code, or not at all."""
    if not row["dropoutD"]:
        return "no dropout"
    code = row["dropout_code"] if "dropout_code" in row.index else True  # tables before the setting
    return "dropout, code dropped" if code else "dropout, code kept"


MARGIN_GROUP = ["energy_norm", "margin"]


def margin_runs(df: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """The finished runs of hinged families, with `score` (finished_scores: diverged as 0), their
    dropout variant, and their last epoch's mean D(x) (d_real) and D(G(z)) (d_fake) over its
    training batches."""
    df = with_models(df)
    runs = df[df["family"].isin(hinged_families()) & df["status"].isin(FINISHED)]
    if runs.empty or not {"d_real", "d_fake"} <= set(curves.columns):
        return runs.iloc[:0].assign(score=[], variant=[], d_real=[], d_fake=[])
    last = curves.sort_values("epoch").groupby("point_id")[["d_real", "d_fake"]].last()
    runs = runs.join(last, on="point_id")
    return runs.assign(score=finished_scores(runs), variant=runs.apply(dropout_variant, axis=1))


def margin_table(df: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per (model, energy_norm, margin, dropout variant): finished runs, median last-epoch D(x)
    and D(G(z)), the share of runs with D(x) <= m (the equilibrium the paper's analysis
    assumes), and I' (diverged as 0)."""
    runs = margin_runs(df, curves)
    rows = []
    for (m, norm, margin, variant), sub in runs.groupby(["model", *MARGIN_GROUP, "variant"], sort=True):
        s = sub["score"]
        rows.append({"model": model_label(m), "energy_norm": norm, "margin": margin, "variant": variant,
                     "runs": len(sub), "d_real_median": float(sub["d_real"].median()),
                     "d_fake_median": float(sub["d_fake"].median()),
                     "real_below_margin_share": float((sub["d_real"] <= margin).mean()),
                     "i_prime_median": float(s.median()), "failure_share": float((s < FAILURE_I_PRIME).mean())})
    return pd.DataFrame(rows)
