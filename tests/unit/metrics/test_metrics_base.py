import math

import pytest

from promotion.metrics.base import LATENCY_BUCKETS, Snapshot, VersionCounters, window


def counters(requests, errors, below_10ms, total):
    counts = tuple(float(below_10ms if b <= 0.01 else total) for b in LATENCY_BUCKETS)
    counts = tuple(0.0 if b < 0.01 else c for b, c in zip(LATENCY_BUCKETS, counts))
    return VersionCounters(requests=requests, errors=errors, latency_bounds=LATENCY_BUCKETS,
                           latency_counts=counts, latency_sum=0.01 * total)


def test_window_is_the_increase_per_version():
    a = Snapshot(100.0, {6: counters(1000, 10, 900, 1000), 7: counters(50, 1, 40, 50)})
    b = Snapshot(105.0, {6: counters(1900, 19, 1700, 1900), 7: counters(100, 5, 80, 100)})
    w = window(a, b)
    assert w.seconds == 5.0
    assert (w.get(6).requests, w.get(6).errors) == (900, 9)
    assert (w.get(7).requests, w.get(7).errors, w.get(7).latency_count) == (50, 4, 50)
    assert w.get(7).slower_than(0.01) == 10
    assert w.resets == ()


def test_a_lowered_counter_is_a_reset_and_counts_only_since_the_restart():
    a = Snapshot(100.0, {7: counters(500, 20, 400, 500)})
    b = Snapshot(105.0, {7: counters(30, 2, 25, 30)})
    w = window(a, b)
    assert w.resets == (7,)
    assert (w.get(7).requests, w.get(7).errors, w.get(7).latency_count) == (30, 2, 30)


def test_a_version_first_seen_in_b_counts_from_zero_and_a_missing_one_served_nothing():
    a = Snapshot(1.0, {6: counters(10, 0, 10, 10)})
    b = Snapshot(2.0, {7: counters(4, 1, 4, 4)})
    w = window(a, b)
    assert w.get(7).requests == 4
    assert w.get(6).requests == 0 and w.get(6).error_rate is None


def test_latency_quantile_interpolates_like_promql():
    # 100 requests: 50 in (5 ms, 7.5 ms], 50 in (7.5 ms, 10 ms]
    counts = tuple(0.0 if b <= 0.005 else 50.0 if b <= 0.0075 else 100.0 for b in LATENCY_BUCKETS)
    c = VersionCounters(requests=100, latency_bounds=LATENCY_BUCKETS, latency_counts=counts)
    assert c.latency_quantile(0.5) == pytest.approx(0.0075)
    assert c.latency_quantile(0.75) == pytest.approx(0.00875)
    assert VersionCounters().latency_quantile(0.95) is None


def test_snapshot_round_trips_through_json():
    import json

    s = Snapshot(3.5, {7: counters(10, 1, 9, 10)})
    back = Snapshot.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and math.isinf(back.versions[7].latency_bounds[-1])
