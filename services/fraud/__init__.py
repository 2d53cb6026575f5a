"""The example model: synthetic fraud-like data and an XGBoost classifier.

Usage::

    from services.fraud import data, train
    df = data.generate(50_000, seed=1)                  # ~2% positives, a `segment` column
    shifted = data.generate(10_000, seed=2, shift=1.0)  # "production" data that drifted
    mv = train.register(registry, train.SPECS["v2"])   # a registered version with lineage
"""
