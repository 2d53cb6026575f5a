"""Anytime-valid tests: e-processes that may be checked after every window.

A canary is looked at again and again while it runs. A fixed-sample test repeated at
every look (the usual z-test) rejects a healthy canary far more often than its nominal
level: about a third of the time over a long step. An *e-process* does not: it is a
nonnegative process whose expectation under the null hypothesis is at most 1 at every
stopping time, so by Ville's inequality ``P(sup_t E_t >= 1/alpha) <= alpha`` however
often it is checked and whenever the checking stops. Rolling back when ``E_t >= 1/alpha``
therefore keeps the false-rollback rate at ``alpha``.

Methods (all with equal-weight mixtures over a fixed grid of alternatives, whose average
of likelihood-ratio martingales is again a test martingale):

* :class:`OddsEProcess` — one-sided test that events happen more often than a
  *predictable* null probability ``p0`` (it may change from window to window). Used
  twice in two ways:

  - **which version an error (or a slow request) came from.** Given ``E`` events in a
    window in which the canary served a share ``s`` of the requests, the number that
    came from the canary is, under "the canary is no worse", stochastically at most
    hypergeometric, hence at most Binomial(E, s) in the convex order (Hoeffding 1963,
    "Probability inequalities for sums of bounded random variables", Thm. 4). The
    likelihood ratio against ``odds(s) * m`` (``m > 1``) is increasing and convex in
    that number, so its conditional expectation is at most 1 whatever ``s`` is. This is
    the conditional e-process for two-stream count data of Lindon & Malek (2022),
    "Anytime-valid inference for multinomial count data" (NeurIPS), used at Netflix for
    canary tests; it stays valid when the canary's weight changes between steps,
    because ``s`` is recomputed for every window.
  - **a one-sample SLO test** (``p0`` = the SLO's allowed error rate, or 5 % of requests
    slower than the p95 objective).

* :class:`SrmEProcess` — the sample-ratio check: a beta-binomial Bayes factor against
  "each request goes to the canary with the configured probability" (the Dirichlet-
  multinomial test of Lindon & Malek 2022 with two arms), restarted — multiplied — at
  each change of weight; a product of test martingales started at stopping times is a
  test martingale.

Background: Ramdas, Grünwald, Vovk, Shafer (2023), "Game-theoretic statistics and safe
anytime-valid inference", Statistical Science 38(4); Howard, Ramdas, McAuliffe, Sekhon
(2021), "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of
Statistics 49(2); Waudby-Smith & Ramdas (2024), "Estimating means of bounded random
variables by betting", JRSS-B 86(1).

The functions work on numpy arrays as well as on numbers, so ``bench/canary_sim.py``
runs thousands of canaries through exactly this arithmetic. State is a list of floats
(log martingale values), ready for JSON.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import betaln, logsumexp

# Alternatives as multiples of the null odds. Spread from small to gross regressions:
# the mixture pays log(len) nats once and then grows at nearly the best rate among them.
ODDS_MULTIPLIERS = (1.5, 2.0, 3.0, 5.0, 10.0)

# Prior concentration of the beta-binomial SRM test: how far from the configured split
# it looks, about 1/sqrt(concentration) in share.
SRM_CONCENTRATION = 200.0


def odds_log_lr(k, n, p0, multipliers=ODDS_MULTIPLIERS):
    """Log likelihood ratios (last axis: one per multiplier) of ``k`` events out of ``n``
    trials under ``odds(p) = odds(p0) * m`` against ``p = p0``.

    Entries with ``p0`` at 0 or 1 (nothing to test: one side served nothing) are 0.
    """
    k = np.asarray(k, dtype=float)[..., None]
    n = np.asarray(n, dtype=float)[..., None]
    p0 = np.asarray(p0, dtype=float)[..., None]
    m = np.asarray(multipliers, dtype=float)
    inside = (p0 > 0) & (p0 < 1)
    p0c = np.where(inside, p0, 0.5)
    odds1 = p0c / (1 - p0c) * m
    p1 = odds1 / (1 + odds1)
    out = k * np.log(p1 / p0c) + (n - k) * np.log((1 - p1) / (1 - p0c))
    return np.where(inside, out, 0.0)


def mixture_log_value(log_m) -> np.ndarray | float:
    """Log of the equal-weight mixture of the martingales in the last axis."""
    log_m = np.asarray(log_m, dtype=float)
    return logsumexp(log_m, axis=-1) - math.log(log_m.shape[-1])


def srm_log_bf(k, n, w, concentration=SRM_CONCENTRATION):
    """Log beta-binomial Bayes factor for ``k`` canary requests out of ``n`` against
    the configured canary probability ``w`` (0 < w < 1), prior Beta(c w, c (1 - w))."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    w = np.asarray(w, dtype=float)
    a, b = concentration * w, concentration * (1 - w)
    return betaln(a + k, b + n - k) - betaln(a, b) - k * np.log(w) - (n - k) * np.log1p(-w)


def e_value(log_value: float) -> float:
    """``exp`` for reports, kept finite for JSON."""
    return math.exp(min(log_value, 690.0))


class OddsEProcess:
    """One-sided e-process: do events happen more often than ``p0`` says?

    ``update(k, n, p0)`` adds a window with ``k`` events out of ``n`` trials whose null
    probability is ``p0`` (fixed before the window is looked at). ``log_value`` is the
    log of the e-value; reject at ``log_value >= log(1/alpha)``.
    """

    def __init__(self, log_m: list[float] | None = None, multipliers=ODDS_MULTIPLIERS) -> None:
        self.multipliers = tuple(float(m) for m in multipliers)
        self.log_m = [0.0] * len(self.multipliers) if log_m is None else [float(x) for x in log_m]
        if len(self.log_m) != len(self.multipliers):
            raise ValueError("OddsEProcess: one log value per multiplier expected")

    def update(self, k: float, n: float, p0: float) -> float:
        if n > 0:
            step = odds_log_lr(k, n, p0, self.multipliers)
            self.log_m = [float(a + b) for a, b in zip(self.log_m, step)]
        return self.log_value

    @property
    def log_value(self) -> float:
        return float(mixture_log_value(self.log_m))

    def to_dict(self) -> dict:
        return {"log_m": list(self.log_m), "multipliers": list(self.multipliers)}

    @classmethod
    def from_dict(cls, d: dict) -> "OddsEProcess":
        return cls(d["log_m"], d["multipliers"])


class SrmEProcess:
    """Sample-ratio mismatch: does the canary get the share of requests it was given?

    Two-sided. Within one weight the Bayes factor of all counts so far; a new weight
    closes that factor and starts another, and the e-value is their product.
    """

    def __init__(self, log_closed: float = 0.0, weight: float | None = None, k: float = 0.0, n: float = 0.0) -> None:
        self.log_closed, self.weight, self.k, self.n = float(log_closed), weight, float(k), float(n)

    def update(self, k: float, n: float, weight: float) -> float:
        """Add ``k`` canary requests out of ``n`` served at canary probability ``weight``."""
        if not 0 < weight < 1 or n <= 0:
            return self.log_value
        if self.weight is None or not math.isclose(weight, self.weight):
            self.log_closed = self.log_value
            self.weight, self.k, self.n = weight, 0.0, 0.0
        self.k += k
        self.n += n
        return self.log_value

    @property
    def log_value(self) -> float:
        if self.weight is None or self.n <= 0:
            return self.log_closed
        return self.log_closed + float(srm_log_bf(self.k, self.n, self.weight))

    def to_dict(self) -> dict:
        return {"log_closed": self.log_closed, "weight": self.weight, "k": self.k, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict) -> "SrmEProcess":
        return cls(d["log_closed"], d["weight"], d["k"], d["n"])
