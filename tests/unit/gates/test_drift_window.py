"""The drift gate reads the production window the service itself records."""

from __future__ import annotations

import numpy as np
import pytest

from promotion.gates._stats import feature_drift
from promotion.gates.drift import WindowError, read_window
from services.fraud import data
from services.router.inference_log import InferenceLog


def _log(state, frame, version=2, shadow_every=0):
    log = InferenceLog(state)
    for i, row in enumerate(frame[list(data.FEATURES)].to_dict("records")):
        log.write(version, row, 0.01, 0, shadow=bool(shadow_every and i % shadow_every == 0))
    log.close()


def test_service_inference_log_is_the_production_window(tmp_path):
    frame = data.generate(3000, seed=1)
    _log(tmp_path, frame, shadow_every=3)
    for path in (tmp_path, tmp_path / "inference"):
        window = read_window(path)
        # mirrored (shadow) rows were never served, so they are not production traffic
        assert len(window) == 2000
        assert set(data.FEATURES) <= set(window.columns)


def test_shifted_traffic_in_the_log_is_named_by_the_drift_statistics(tmp_path):
    ref = data.generate(5000, seed=2)
    _log(tmp_path, data.generate(5000, seed=3, shift=1.0))
    window = read_window(tmp_path)
    cols = list(data.FEATURES)
    stats = feature_drift([ref[c].to_numpy(dtype=float) for c in cols], [window[c].to_numpy(dtype=float) for c in cols])
    psi = dict(zip(cols, stats.psi))
    assert psi["amount"] > 0.2 and psi["card_present"] < 0.1


def test_an_empty_log_cannot_decide(tmp_path):
    (tmp_path / "inference").mkdir()
    with pytest.raises(WindowError, match="holds no requests yet"):
        read_window(tmp_path)
