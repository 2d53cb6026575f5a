"""Drift statistics, vectorised: PSI and the two-sample Kolmogorov-Smirnov test per feature.

Per feature, both samples are sorted once (numpy, in C; features are compared at float32
precision, which is what XGBoost itself sees). Everything after that is a handful of
``searchsorted`` calls on the reference's distinct values, so the cost is one sort of the
production column plus O(m log n) for a reference of m rows, and there is no per-row
Python. Features run on a thread pool: numpy releases the GIL while sorting.

KS: both empirical CDFs are right-continuous step functions; on each interval between
consecutive distinct reference values the reference CDF is constant and the production
CDF only grows, so the supremum of their difference is reached at a reference value or
just before the next one. Two ``searchsorted`` calls give both counts exactly (ties
included); the p-value is Smirnov's asymptotic distribution, as in
``scipy.stats.ks_2samp(method="asymp")``.

PSI: bins are the reference's deciles (``bins`` quantiles; fewer when values repeat),
proportions floored at 1e-4 so an empty bin gives a large, finite PSI.

Categorical features (:func:`categorical_drift`): values are compared as labels (text;
``3``, ``3.0`` and ``"3"`` are one label, ``True`` is ``"True"``), missing values left out
as on the numeric side. Buckets: the reference's ``max_categories`` most frequent
categories, one ``(other)`` bucket for the rest of the reference's categories, and one
``(unseen)`` bucket for production values the reference never had (its reference share
is 0, floored like any empty bin, so a new category moves PSI). PSI is taken over those
buckets; the test is Pearson's chi-square test of homogeneity on the 2 x buckets table
of counts (buckets empty on both sides dropped), p-value from the chi-square
distribution with buckets - 1 degrees of freedom. pandas hashes the labels (no sort).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

EPS = 1e-4


@dataclass(frozen=True)
class FeatureDrift:
    """Per-feature results, in the order the features were given."""

    psi: np.ndarray
    ks_d: np.ndarray
    ks_p: np.ndarray
    n_reference: np.ndarray
    n_current: np.ndarray


def _sorted_finite(x: np.ndarray) -> np.ndarray:
    s = np.sort(np.asarray(x, dtype=np.float32))  # a copy; NaN sorts last
    if s.size and np.isnan(s[-1]):
        s = s[: int(np.searchsorted(s, np.inf, side="right"))]
    return s


def _one(ref: np.ndarray, cur: np.ndarray, bins: int) -> tuple[float, float, int, int]:
    r, p = _sorted_finite(ref), _sorted_finite(cur)
    m, n = r.size, p.size
    if m == 0 or n == 0:
        return float("inf"), 1.0, m, n
    # KS on the distinct reference values (last occurrence gives the right-continuous CDF)
    last = np.flatnonzero(np.r_[r[1:] != r[:-1], True])
    u = r[last]
    f_r = (last + 1) / m
    f_r_before = np.r_[0.0, f_r[:-1]]
    f_p_at = np.searchsorted(p, u, side="right") / n
    f_p_before = np.searchsorted(p, u, side="left") / n
    d = max(float(np.max(np.abs(f_r - f_p_at))), float(np.max(np.abs(f_r_before - f_p_before))))
    # PSI on reference quantile bins: (-inf, e1], (e1, e2], ..., (ek, inf)
    edges = np.unique(r[(np.arange(1, bins) * m) // bins])
    cum_r = np.r_[0, np.searchsorted(r, edges, side="right"), m]
    cum_p = np.r_[0, np.searchsorted(p, edges, side="right"), n]
    pr = np.maximum(np.diff(cum_r) / m, EPS)
    pp = np.maximum(np.diff(cum_p) / n, EPS)
    psi = float(np.sum((pp - pr) * np.log(pp / pr)))
    return psi, d, m, n


def ks_pvalues(d: np.ndarray, n_ref: np.ndarray, n_cur: np.ndarray) -> np.ndarray:
    """Two-sided asymptotic KS p-values (Smirnov), vectorised over features."""
    from scipy.stats import kstwo

    big = np.maximum(n_ref, n_cur).astype(float)
    small = np.minimum(n_ref, n_cur).astype(float)
    en = np.round(big * small / np.maximum(big + small, 1))
    out = np.ones_like(d, dtype=float)
    ok = (en > 0) & np.isfinite(d)
    if ok.any():
        out[ok] = np.clip(kstwo.sf(d[ok], en[ok]), 0.0, 1.0)
    return out


def feature_drift(reference: Sequence[np.ndarray], current: Sequence[np.ndarray], bins: int = 10,
                  threads: int | None = None) -> FeatureDrift:
    """PSI, KS statistic and KS p-value for each (reference, current) column pair."""
    if len(reference) != len(current):
        raise ValueError("reference and current must have the same number of features")
    workers = max(1, min(threads or os.cpu_count() or 1, len(reference) or 1))
    if workers == 1:
        rows = [_one(r, c, bins) for r, c in zip(reference, current)]
    else:
        with ThreadPoolExecutor(workers) as pool:
            rows = list(pool.map(lambda rc: _one(rc[0], rc[1], bins), zip(reference, current)))
    psi = np.array([r[0] for r in rows], dtype=float)
    d = np.array([r[1] for r in rows], dtype=float)
    n_ref = np.array([r[2] for r in rows])
    n_cur = np.array([r[3] for r in rows])
    return FeatureDrift(psi, d, ks_pvalues(d, n_ref, n_cur), n_ref, n_cur)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of one column against a reference, on the reference's quantile bins."""
    return _one(reference, current, bins)[0]


def score_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of two probability score samples on ``bins`` equal-width bins of [0, 1].

    Quantile bins would magnify harmless calibration differences among the ~98% of
    transactions two models both score near zero; fixed bins measure where the
    probability mass moves.
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    r, c = r[np.isfinite(r)], c[np.isfinite(c)]
    if r.size == 0 or c.size == 0:
        return float("inf")
    edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    pr = np.maximum(np.bincount(np.searchsorted(edges, r, side="right"), minlength=bins) / r.size, EPS)
    pc = np.maximum(np.bincount(np.searchsorted(edges, c, side="right"), minlength=bins) / c.size, EPS)
    return float(np.sum((pc - pr) * np.log(pc / pr)))


@dataclass(frozen=True)
class CategoryDrift:
    """Per-feature results for categorical features, in the order given."""

    psi: np.ndarray
    chi2: np.ndarray
    chi2_p: np.ndarray
    unseen: np.ndarray          # share of production rows in categories the reference never had
    n_categories: np.ndarray    # distinct categories in the reference
    n_reference: np.ndarray
    n_current: np.ndarray


def _label(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "True" if x else "False"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return str(int(x)) if float(x).is_integer() else repr(float(x))
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    return str(x)


def category_labels(values):
    """``values`` as a pandas Series of text labels, missing values dropped."""
    import pandas as pd

    s = pd.Series(values)
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.map({True: "True", False: "False"}).dropna()
    if pd.api.types.is_numeric_dtype(s.dtype):
        f = s.to_numpy(dtype=np.float64, na_value=np.nan)
        f = f[np.isfinite(f)]
        if np.all(f == np.round(f)):
            return pd.Series(f.astype(np.int64)).astype(str)
        return pd.Series([_label(x) for x in f], dtype=object)
    s = s.astype(object)
    s = s[s.notna()]
    if pd.api.types.infer_dtype(s, skipna=False) == "string":  # all text already: no per-value Python
        return s
    return s.map(_label)


def _one_categorical(ref, cur, max_categories: int) -> tuple[float, float, float, float, int, int, int]:
    from scipy.stats import chi2 as chi2_dist

    r, c = category_labels(ref), category_labels(cur)
    m, n = len(r), len(c)
    if m == 0 or n == 0:
        return float("inf"), 0.0, 1.0, 0.0, 0, m, n
    import pandas as pd

    counts = r.value_counts()                       # most frequent first
    known = pd.Index(counts.index)
    k = min(len(known), max_categories)
    other = len(known) > k
    nb = k + int(other) + 1                         # kept, (other), (unseen)
    ref_b = np.zeros(nb)
    ref_b[:k] = counts.to_numpy()[:k]
    if other:
        ref_b[k] = counts.to_numpy()[k:].sum()
    idx = known.get_indexer(c.to_numpy())
    cur_idx = np.where(idx < 0, nb - 1, np.minimum(idx, k))
    cur_b = np.bincount(cur_idx, minlength=nb).astype(float)
    pr = np.maximum(ref_b / m, EPS)
    pc = np.maximum(cur_b / n, EPS)
    psi = float(np.sum((pc - pr) * np.log(pc / pr)))
    total = ref_b + cur_b
    keep = total > 0
    if keep.sum() < 2:
        stat, p = 0.0, 1.0
    else:
        rb, cb, tot = ref_b[keep], cur_b[keep], total[keep]
        er, ec = m * tot / (m + n), n * tot / (m + n)
        stat = float(np.sum((rb - er) ** 2 / er + (cb - ec) ** 2 / ec))
        p = float(chi2_dist.sf(stat, int(keep.sum()) - 1))
    return psi, stat, p, float(cur_b[-1] / n), len(known), m, n


def categorical_drift(reference: Sequence, current: Sequence, max_categories: int = 50) -> CategoryDrift:
    """PSI over categories (with an unseen bucket) and the chi-square test, per (reference, current) pair."""
    if len(reference) != len(current):
        raise ValueError("reference and current must have the same number of features")
    rows = [_one_categorical(r, c, max_categories) for r, c in zip(reference, current)]
    col = lambda i, t=float: np.array([row[i] for row in rows], dtype=t)  # noqa: E731
    return CategoryDrift(col(0), col(1), col(2), col(3), col(4, int), col(5, int), col(6, int))
