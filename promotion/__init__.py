"""promotion: take ML models from the registry to production safely.

The package is organised by responsibility::

    promotion.config     environment and policy files, validated at load
    promotion.registry   the MLflow model registry (aliases, lineage, artifacts)
    promotion.gates      pre-merge checks that decide with numbers
    promotion.metrics    providers that measure a running service
    promotion.analysis   turns measurements into a verdict
    promotion.rollout    the controller that acts on verdicts, one tick at a time
    promotion.traffic    backends that move traffic between versions
    promotion.records    signed promotion records and their verification
    promotion.register   one call in a training script: log and register a version with
                         everything the gates need (:mod:`promotion.registration`)

Usage::

    import promotion
    mv = promotion.register(pipeline, X_holdout, y_holdout, name="churn", segment="region")

    $ promotion validate
    $ promotion gate prod --json
    $ promotion rollout prod
"""

__version__ = "0.1.0"

__all__ = ["register", "__version__"]


def __getattr__(name: str):
    # lazy: `import promotion` (and the CLI's start) stays free of MLflow and pandas
    if name == "register":
        from promotion.registration import register

        return register
    raise AttributeError(f"module 'promotion' has no attribute {name!r}")
