"""Deterministic synthetic transactions with about 2% fraud.

The label is a noisy threshold on a non-linear score with interactions, so deeper models
trained on more data genuinely do better. ``segment`` (0, 1, 2: region) is an attribute
for fairness checks and not a model feature. ``shift`` moves several feature
distributions the way a change in the customer base would, for drift tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = (
    "amount", "hour", "merchant_risk", "distance_km", "velocity_1h", "account_age_days",
    "device_trust", "intl", "card_present", "prior_chargebacks",
)
SEGMENT = "segment"
LABEL = "is_fraud"
POSITIVE_RATE = 0.02
# The label threshold is fixed (computed once on a large unshifted sample) so that shifted
# data changes the fraud rate the way real drift would, instead of being re-normalised.
_THRESHOLD_SEED = 12345


def _features(n: int, rng: np.random.Generator, shift: float) -> pd.DataFrame:
    f = {
        "amount": rng.lognormal(3.5 + 0.6 * shift, 1.0, n),
        "hour": rng.integers(0, 24, n).astype(float),
        "merchant_risk": np.clip(rng.beta(2, 8, n) + 0.15 * shift, 0, 1),
        "distance_km": rng.exponential(20 * (1 + shift), n),
        "velocity_1h": rng.poisson(1.0 + 0.5 * shift, n).astype(float),
        "account_age_days": rng.exponential(700, n),
        "device_trust": rng.beta(5, 2, n),
        "intl": (rng.random(n) < 0.08 + 0.1 * shift).astype(float),
        "card_present": (rng.random(n) < 0.6).astype(float),
        "prior_chargebacks": rng.poisson(0.05, n).astype(float),
    }
    df = pd.DataFrame(f, columns=list(FEATURES))
    df[SEGMENT] = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    return df


def _score(df: pd.DataFrame) -> np.ndarray:
    a = np.log1p(df["amount"].to_numpy())
    hour = df["hour"].to_numpy()
    night = ((hour < 6) | (hour > 22)).astype(float)
    return (
        1.3 * a
        + 5.0 * df["merchant_risk"].to_numpy() ** 2
        + 1.6 * (df["velocity_1h"].to_numpy() >= 3) * (df["device_trust"].to_numpy() < 0.55)
        + 1.4 * df["intl"].to_numpy() * (1 - df["card_present"].to_numpy())
        + 0.9 * night * (a > 4.5)
        + 0.6 * np.log1p(df["distance_km"].to_numpy()) * (df["card_present"].to_numpy() == 0)
        - 0.5 * np.log1p(df["account_age_days"].to_numpy()) / 3
        + 1.2 * np.minimum(df["prior_chargebacks"].to_numpy(), 2)
        - 2.0 * df["device_trust"].to_numpy()
    )


_cut: float | None = None


def _label_cut() -> float:
    global _cut
    if _cut is None:
        rng = np.random.default_rng(_THRESHOLD_SEED)
        df = _features(400_000, rng, 0.0)
        noisy = _score(df) + rng.normal(0, 0.15, len(df))
        _cut = float(np.quantile(noisy, 1 - POSITIVE_RATE))
    return _cut


def generate(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """``n`` transactions: FEATURES, ``segment`` and the ``is_fraud`` label."""
    rng = np.random.default_rng(seed)
    df = _features(n, rng, shift)
    noisy = _score(df) + rng.normal(0, 0.15, n)
    df[LABEL] = (noisy > _label_cut()).astype(int)
    return df


def snapshot_digest(df: pd.DataFrame) -> str:
    """sha256 of a data frame's content (column names, dtypes and values)."""
    import hashlib

    h = hashlib.sha256()
    for col in df.columns:
        h.update(col.encode() + b"\0" + str(df[col].dtype).encode() + b"\0")
        h.update(np.ascontiguousarray(df[col].to_numpy()).tobytes())
    return "sha256:" + h.hexdigest()
