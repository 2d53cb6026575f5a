"""Train the example house-price model and register a version with ``promotion.register``.

A scikit-learn pipeline (one-hot encoded ``neighbourhood``, a string column, next to
numeric features) predicts a price in thousands. Each spec trains on its own draw of
deterministic synthetic data; every version is measured on the same fixed holdout, so
their RMSE and MAE compare, and ``policies/prod.yaml`` next to this file judges a
challenger on both relative to the champion::

    $ python -m services.examples.house_prices.train --spec v1    # linear baseline
    $ python -m services.examples.house_prices.train --spec v2    # gradient boosting: lower RMSE and MAE
    $ python -m services.examples.house_prices.train --spec v3    # little data: worse, the gate blocks it

Run it from a committed checkout (``promotion.register`` refuses uncommitted code).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import numpy as np

NEIGHBOURHOODS = ("centre", "harbour", "old-town", "suburbs", "university")
FEATURES = ("area_m2", "rooms", "age_years", "distance_km", "neighbourhood")
SEGMENT = "neighbourhood"
TARGET = "price_k"
HOLDOUT_SEED = 7001
HOLDOUT_ROWS = 2_000


@dataclass(frozen=True)
class Spec:
    """What to train: how much data, which estimator."""

    train_rows: int
    estimator: str          # "ridge" | "boosting"
    seed: int
    description: str = ""


SPECS = {
    "v1": Spec(3_000, "ridge", seed=11, description="linear baseline"),
    "v2": Spec(3_000, "boosting", seed=12, description="gradient boosting"),
    "v3": Spec(60, "boosting", seed=13, description="little data"),
}


def generate(n: int, seed: int):
    """``n`` houses: FEATURES and the price (thousands), with a non-linear premium."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "area_m2": rng.gamma(6, 15, n),
        "rooms": rng.integers(1, 7, n),
        "age_years": rng.exponential(30, n),
        "distance_km": rng.exponential(6, n),
        "neighbourhood": rng.choice(NEIGHBOURHOODS, n, p=[0.15, 0.15, 0.2, 0.35, 0.15]),
    })
    premium = frame["neighbourhood"].map({"centre": 1.5, "harbour": 1.3, "old-town": 1.2, "suburbs": 0.9,
                                          "university": 1.0}).to_numpy()
    price = (premium * (2.8 * frame["area_m2"] + 12 * frame["rooms"])
             * np.exp(-frame["distance_km"] / 25) - 0.6 * np.minimum(frame["age_years"], 60))
    frame[TARGET] = price + rng.normal(0, 15, n)
    return frame


def fit(spec: Spec):
    """The fitted pipeline and its training frame."""
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    train = generate(spec.train_rows, spec.seed)
    encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), [SEGMENT]), remainder="passthrough",
                                     sparse_threshold=0)
    estimator = Ridge(alpha=1.0) if spec.estimator == "ridge" else \
        GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.1, random_state=0)
    model = make_pipeline(encode, estimator).fit(train[list(FEATURES)], train[TARGET])
    return model, train


def register(spec: Spec, name: str = "house-prices", **kwargs):
    """Train ``spec`` and register it with ``promotion.register``; returns the ModelVersion.

    ``kwargs`` go to :func:`promotion.register` (``registry=``, ``code_dir=``, ...).
    """
    import promotion

    model, train = fit(spec)
    holdout = generate(HOLDOUT_ROWS, HOLDOUT_SEED)
    return promotion.register(
        model, holdout[list(FEATURES)], holdout[TARGET], name=name, task="regression", segment=SEGMENT,
        reference=train[list(FEATURES)], train=train, params=asdict(spec), description=spec.description, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="register a version of the example house-price model")
    parser.add_argument("--spec", choices=sorted(SPECS), default="v1")
    parser.add_argument("--name", default="house-prices")
    args = parser.parse_args(argv)
    mv = register(SPECS[args.spec], args.name)
    m = mv.metrics
    print(f"{mv.name} v{mv.version} ({SPECS[args.spec].description}): RMSE {m['rmse']:.2f}  MAE {m['mae']:.2f}  "
          f"R2 {m['r2']:.3f}  p95 {m['latency_p95_ms']:.2f} ms  digest {mv.digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
