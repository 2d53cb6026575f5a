"""A real MLflow registry and real ``bentoml serve`` routers for integration tests.

:func:`fraud_registry` registers, once per test session and base folder:

- versions 1 and 2: ordinary ``tiny`` fraud detectors;
- version 3: trained with an extra feature (``session_risk``) - requests without it
  fail on version 3 only, with error kind ``input``;
- version 4: an ordinary version whose stored artifact is then altered, so its
  registered digest no longer matches (the service must refuse it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FEATURES = {"amount": 42.0, "hour": 13.0, "merchant_risk": 0.3, "distance_km": 12.0, "velocity_1h": 1.0,
            "account_age_days": 400.0, "device_trust": 0.7, "intl": 0.0, "card_present": 1.0,
            "prior_chargebacks": 0.0}
TOKEN = "integration-token"


@dataclass(frozen=True)
class FraudRegistry:
    uri: str
    registry: object
    digests: dict[int, str]  # registered digest per version (version 4's no longer matches)
    extra_feature_version: int
    tampered_version: int

    def body(self, routes: dict[int, float], shadow: dict | None = None) -> dict:
        """An admin request body with the registered digests of the routed versions."""
        return {"routes": {str(v): w for v, w in routes.items()},
                "digests": {str(v): self.digests[v] for v in routes}, "shadow": shadow}


_cache: dict[Path, FraudRegistry] = {}


def fraud_registry(base: Path) -> FraudRegistry:
    base = Path(base)
    if base in _cache:
        return _cache[base]
    from promotion.registry import Registry
    from tests.support import fraud_versions as fv

    base.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("PROMOTION_STATE", "BENTOML_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["PROMOTION_STATE"] = str(base / "state")
    os.environ["BENTOML_HOME"] = str(base / "bentoml")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        reg = Registry(root=base)
        os.environ["MLFLOW_TRACKING_URI"] = reg.uri
        v1, v2 = fv.register_tiny(reg), fv.register_tiny(reg)
        v3 = fv.register_extra_feature(reg)
        v4 = fv.register_tiny(reg)
        fv.tamper_artifact(reg, "fraud-detector", v4.version)
    finally:
        # later tests must not inherit this registry by accident
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    result = FraudRegistry(uri=reg.uri, registry=reg,
                           digests={m.version: m.digest for m in (v1, v2, v3, v4)},
                           extra_feature_version=v3.version, tampered_version=v4.version)
    _cache[base] = result
    return result
