"""Anytime-valid comparisons of two bounded means, from cumulative per-version sums.

The label, KPI and loss signals all reduce to the same question: each labelled request
(or each KPI unit) of a version yields a value ``y`` in ``[0, 1]`` where higher is better
(a hit at the decision threshold, a conversion, ``1 - loss / loss_max``), and the canary
is "worse by more than the tolerance" when its mean is below ``g * champion - h``.

**The margin.** ``H0: mu_canary >= g * mu_champion - h`` with ``g > 0``: ``g = 1, h = t`` is
an absolute tolerance ``t``; ``g = 1 - r, h = 0`` a relative one ("must not drop by more
than r"); a lower-is-better rate ``x = 1 - y`` with ``x_c <= (1 + r) x_b + t`` becomes
``g = 1 + r, h = r + t``. :func:`margin` builds them.

**Bernoulli domination.** For values in ``[0, 1]`` with mean ``mu``, convexity of ``exp``
gives ``E exp(l y) <= 1 - mu + mu e^l`` for every real ``l`` (Hoeffding 1963, "Probability
inequalities for sums of bounded random variables", JASA 58): a bounded value is
dominated by a Bernoulli one with the same mean, so a Bernoulli likelihood ratio of the
sums is a valid bet even for non-binary values (clipped losses, capped revenue).

**Confidence sequences** (:func:`mean_bounds`): for a fixed ``mu`` the equal-weight
mixture over bets ``l`` of ``exp(l S - n log(1 - mu + mu e^l))`` is a test supermartingale
(Ramdas, Grünwald, Vovk & Shafer 2023, "Game-theoretic statistics and safe anytime-valid
inference", Stat. Sci. 38(4)); the ``mu`` it has not rejected form a time-uniform
confidence sequence (Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2); Waudby-Smith &
Ramdas 2024, "Estimating means of bounded random variables by betting", JRSS-B 86(1)).
They are functions of the cumulative sums alone.

**The comparison** (:func:`comparison_update`), at level ``alpha``: a share
``CHAMPION_SHARE * alpha`` (``beta``) goes to a lower confidence sequence ``L_t`` for the
champion's mean; the rest to a one-sided e-process on the canary's increments against
the moving null ``p0_t = g L_t - h`` (alternative: lower). The champion's and canary's
requests are disjoint and independent (randomised routing), so conditionally on all
champion data the ``p0_t`` are fixed numbers, and on the event that the champion's
sequence covers its mean (probability ``>= 1 - beta``) every ``p0_t`` is at most the
canary's mean under H0: the canary's bets are then a test supermartingale, and Ville's
inequality gives ``P(e >= 1/(alpha - beta) ever) <= alpha - beta``. In all,
``P(a canary within tolerance is ever rejected) <= alpha``. (A plain two-sample bet, valid
for every champion mean at once, was tried first: its worst case over the champion's
mean made a 20 % CTR drop on 100,000 canary requests invisible.)

Assumptions, stated where they are used: within a version the values are independent
with a common mean (randomised routing), and whether and when a request's label arrives
does not depend on the label (non-informative delay), so counts may grow at any pace and
labels that arrive after their step ended simply join the version's next increment.
Losses must be clipped to ``[0, loss_max]`` before they are summed.

Everything is numpy-vectorised: the bench runs thousands of canaries through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

# Bets (log multipliers) from gross to fine regressions; the mixture pays log(20) nats once.
LAMBDAS = tuple(2.0 ** (k / 2) for k in range(3, -17, -1))

_BISECT_STEPS = 32  # 2**-32: far below any count resolution

# Share of a comparison's alpha spent on the champion's confidence sequence: the champion
# has most of the traffic, so its bound is tight at a small level.
CHAMPION_SHARE = 0.25


@dataclass(frozen=True)
class Margin:
    """``H0: mu_canary >= g * mu_champion - h`` on the higher-is-better scale."""

    g: float
    h: float

    def __post_init__(self) -> None:
        if not self.g > 0 or not self.h >= 0:
            raise ValueError(f"margin needs g > 0 and h >= 0, got g={self.g}, h={self.h}")


def margin(higher_is_better: bool, absolute: float = 0.0, relative: float = 0.0) -> Margin:
    """The null "the canary is not worse by more than the tolerance", on the [0, 1]
    higher-is-better scale of the values.

    ``higher_is_better``: the metric as the policy states it (recall, CTR: True; FPR,
    loss: False, in which case the caller passes ``y = 1 - x``). ``absolute`` is in the
    metric's own [0, 1] units, ``relative`` a fraction of the champion's value.
    """
    if not 0 <= absolute < 1 or not 0 <= relative < 1:
        raise ValueError("tolerances must be in [0, 1)")
    if higher_is_better:
        return Margin(1.0 - relative, absolute)
    return Margin(1.0 + relative, relative + absolute)


def _lse_mean(x: np.ndarray) -> np.ndarray:
    return logsumexp(x, axis=-1) - math.log(x.shape[-1])


def comparison_log_factors(sc, nc, p0, lambdas=LAMBDAS) -> np.ndarray:
    """Log e-value factors (last axis: one per bet) of ``nc`` new canary values summing to
    ``sc``, against "the canary's mean is at least ``p0``" (fixed before these values)."""
    sc, nc, p0 = (np.asarray(v, dtype=float)[..., None] for v in (sc, nc, p0))
    lam = np.asarray(lambdas, dtype=float)
    a = -np.expm1(-lam)                                   # 1 - e^-l
    out = -lam * sc - nc * np.log1p(-np.clip(p0, 0.0, 1.0) * a)
    return np.where(nc > 0, out, 0.0)


def champion_null(sb, nb, m: Margin, alpha: float) -> np.ndarray:
    """``p0 = g L - h``: the smallest canary mean H0 allows, with ``L`` the champion's
    lower confidence bound at ``CHAMPION_SHARE * alpha``."""
    lower, _ = mean_bounds(sb, nb, CHAMPION_SHARE * alpha, upper=False)
    return np.clip(m.g * np.asarray(lower) - m.h, 0.0, 1.0)


def comparison_update(log_m, consumed, current, m: Margin, alpha: float, lambdas=LAMBDAS, paired: bool = True):
    """One step of the comparison from *cumulative* sums; judge with :func:`log_threshold`.

    ``consumed`` and ``current`` are arrays ``[..., 4]`` of ``(canary_sum, canary_n,
    champion_sum, champion_n)``: what earlier updates used, and the counts now. Only the
    canary's increment is new data for the bets; the champion's cumulative counts set the
    null. The canary's increment waits while the champion has no new labels (a choice made
    on counts only, never on values). A count that went down (a restarted counter) starts
    that version's counts afresh. Returns ``(log_m, consumed)``.

    ``paired=False`` (probation after a promotion, :mod:`promotion.rollout.probation`):
    the champion serves nothing any more, so the canary's increments are bet on against
    the champion's baseline as it stands, without waiting for champion labels. Still a
    choice on counts only (the phase), so each factor stays valid given the past; the
    null then also assumes the champion's mean would have stayed what it was.
    """
    log_m = np.asarray(log_m, dtype=float)
    consumed = np.asarray(consumed, dtype=float)
    current = np.asarray(current, dtype=float)
    reset_c = current[..., 1] < consumed[..., 1]
    reset_b = current[..., 3] < consumed[..., 3]
    base = consumed.copy()
    base[..., 0:2] = np.where(reset_c[..., None], 0.0, consumed[..., 0:2])
    base[..., 2:4] = np.where(reset_b[..., None], 0.0, consumed[..., 2:4])
    d = current - base
    use = (d[..., 1] > 0) & ((d[..., 3] > 0) | (not paired))
    p0 = champion_null(current[..., 2], current[..., 3], m, alpha)
    step = comparison_log_factors(d[..., 0], d[..., 1] * use, p0, lambdas)
    new_consumed = np.where(use[..., None], current, base)
    return log_m + step, new_consumed


def log_threshold(alpha: float) -> float:
    """Reject when the canary's log e-value reaches this: ``log(1 / (alpha - beta))``."""
    return math.log(1 / ((1 - CHAMPION_SHARE) * alpha))


def mixture(log_m) -> np.ndarray | float:
    """Log e-value: equal-weight mixture over the bets in the last axis."""
    out = _lse_mean(np.asarray(log_m, dtype=float))
    return float(out) if np.ndim(out) == 0 else out


def _mixture_at(mu, s, n, sign: float, lambdas) -> np.ndarray:
    lam = sign * np.asarray(lambdas, dtype=float)
    mu = np.asarray(mu, dtype=float)[..., None]
    log_lr = lam * np.asarray(s, dtype=float)[..., None] - np.asarray(n, dtype=float)[..., None] * np.log1p(mu * np.expm1(lam))
    return _lse_mean(log_lr)


def mean_bounds(s, n, alpha: float, lambdas=LAMBDAS, upper: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Time-uniform lower and upper confidence bounds for the mean of values in [0, 1],
    from their cumulative sum ``s`` over ``n`` values, each side at level ``alpha``.

    ``P(exists t: mu < lower_t) <= alpha`` and the same for the upper bound. With no data
    the bounds are 0 and 1. ``upper=False`` skips the upper bound (returned as 1).
    """
    s = np.asarray(s, dtype=float)
    n = np.asarray(n, dtype=float)
    est = np.where(n > 0, s / np.maximum(n, 1e-300), 0.5)
    log_t = math.log(1 / alpha)
    bounds = []
    sides = ((1.0, np.zeros_like(est), est), (-1.0, est, np.ones_like(est)))
    for sign, lo0, hi0 in sides if upper else sides[:1]:
        lo, hi = lo0.copy(), hi0.copy()
        for _ in range(_BISECT_STEPS):
            mid = (lo + hi) / 2
            rejected = _mixture_at(mid, s, n, sign, lambdas) >= log_t
            # lower bound: rejected means mid is too low; upper bound: too high
            if sign > 0:
                lo, hi = np.where(rejected, mid, lo), np.where(rejected, hi, mid)
            else:
                lo, hi = np.where(rejected, lo, mid), np.where(rejected, mid, hi)
        bounds.append(np.where(n > 0, lo if sign > 0 else hi, 0.0 if sign > 0 else 1.0))
    lower, high = bounds[0], (bounds[1] if upper else np.ones_like(est))
    if lower.ndim == 0:
        return float(lower), float(high)
    return lower, high


@dataclass(frozen=True)
class ComparisonState:
    """What a comparison has used so far: the canary's per-bet log values and the
    cumulative ``(canary_sum, canary_n, champion_sum, champion_n)`` already consumed."""

    log_m: tuple[float, ...] = field(default_factory=lambda: (0.0,) * len(LAMBDAS))
    consumed: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @classmethod
    def new(cls) -> "ComparisonState":
        return cls()

    @property
    def log_value(self) -> float:
        return float(mixture(np.asarray(self.log_m)))

    def to_dict(self) -> dict:
        return {"log_m": list(self.log_m), "consumed": list(self.consumed)}

    @classmethod
    def from_dict(cls, d: dict) -> "ComparisonState":
        log_m = tuple(float(x) for x in d["log_m"])
        if len(log_m) != len(LAMBDAS) or len(d["consumed"]) != 4:
            raise ValueError("comparison state does not match this version's bets")
        return cls(log_m, tuple(float(x) for x in d["consumed"]))


def comparison_step(state: ComparisonState, canary: tuple[float, float], champion: tuple[float, float],
                    m: Margin, alpha: float, paired: bool = True) -> ComparisonState:
    """Advance the comparison at ``alpha`` with cumulative ``(sum, n)`` of both versions
    (``paired``: see :func:`comparison_update`)."""
    log_m, consumed = comparison_update(np.asarray(state.log_m), np.asarray(state.consumed),
                                        np.asarray([canary[0], canary[1], champion[0], champion[1]]), m, alpha,
                                        paired=paired)
    return ComparisonState(tuple(float(x) for x in log_m), tuple(float(x) for x in consumed))
