"""The label and KPI signals as people see them: live table columns and job-summary charts."""

from __future__ import annotations

import io
import re

from rich.console import Console

from promotion.rollout import Phase, RolloutState
from promotion.rollout.report import live_table, summary_markdown


def _state(**kw) -> RolloutState:
    base = dict(env="prod", model="fraud-detector", canary=7, canary_digest="sha256:" + "7" * 64, champion=6,
                champion_digest="sha256:" + "6" * 64, source_commit=None, policy_digest="sha256:" + "0" * 64,
                started_at=1000.0)
    return RolloutState(**{**base, **kw})


def _text(renderable) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(renderable)
    return out.getvalue().replace("│", " ")


def _point(t, weight, canary_tpr, champion_tpr, cov_c, cov_b, e, kpi=None):
    p = {"t": t, "weight": weight, "canary_requests": 100 * t, "canary_error_rate": 0.01, "canary_p95_ms": 3.0,
         "champion_requests": 900 * t, "champion_error_rate": 0.01, "champion_p95_ms": 3.0,
         "e_values": {"errors": 0.5, "labels": e},
         "labels": {"metric": "tpr", "canary": canary_tpr, "champion": champion_tpr,
                    "labelled": {"canary": 100 * t * cov_c, "champion": 900 * t * cov_b},
                    "coverage": {"canary": cov_c, "champion": cov_b}}}
    if kpi:
        p["kpis"] = {"ctr": {"canary": kpi[0], "champion": kpi[1]}}
        p["e_values"]["kpi:ctr"] = kpi[2]
    return p


TIMELINE = [_point(10, 5.0, None, None, 0.0, 0.0, 1.0, (0.031, 0.030, 1.0)),
            _point(20, 5.0, 0.9, 0.95, 0.25, 0.3, 1.4, (0.029, 0.030, 1.1)),
            _point(30, 25.0, 0.86, 0.95, 0.5, 0.55, 7.2, (0.028, 0.030, 2.0)),
            _point(40, 25.0, 0.85, 0.951, 0.75, 0.8, 25.0, (0.027, 0.030, 3.3))]


def _mermaid_blocks(md: str) -> list[str]:
    return re.findall(r"```mermaid\n(.*?)```", md, flags=re.S)


def _lines(block: str) -> list[list[float]]:
    return [[float(x) for x in m.split(", ")] for m in re.findall(r"^\s*line \[(.*)\]$", block, flags=re.M)]


def test_job_summary_charts_label_coverage_and_recall_per_version_over_time():
    md = summary_markdown(_state(phase=Phase.ROLLED_BACK, timeline=TIMELINE, reason="labels: tpr regressed"))
    blocks = _mermaid_blocks(md)
    coverage = next(b for b in blocks if 'title "label coverage (%)"' in b)
    assert coverage.startswith("xychart-beta\n")
    assert "x-axis [10, 20, 30, 40]" in coverage and 'y-axis "%" 0 --> 100' in coverage
    assert _lines(coverage) == [[0, 25, 50, 75], [0, 30, 55, 80]]  # canary, champion
    recall = next(b for b in blocks if 'title "tpr per version"' in b)
    # the first point has no labelled positives yet: the metric chart starts where both have a value
    assert "x-axis [20, 30, 40]" in recall
    assert _lines(recall) == [[0.9, 0.86, 0.85], [0.95, 0.95, 0.951]]
    # the same numbers as a table, for where Mermaid is not rendered
    assert "| t (s) | weight | canary tpr | champion tpr |" in md
    assert "| 40 | 25% | 0.85 | 0.951 | 3,000 (75.00%) | 28,800 (80.00%) | 25 |" in md
    assert "| 10 | 5% | - | - | 0 (0.00%) | 0 (0.00%) | 1 |" in md


def test_job_summary_charts_each_kpi_per_version():
    md = summary_markdown(_state(phase=Phase.PROMOTED, timeline=TIMELINE))
    kpi = next(b for b in _mermaid_blocks(md) if 'title "KPI ctr"' in b)
    assert _lines(kpi) == [[0.031, 0.029, 0.028, 0.027], [0.03, 0.03, 0.03, 0.03]]
    assert "KPI ctr at 40s: canary 0.027, champion 0.03, e-value 3.3" in md


def test_job_summary_without_labels_has_no_label_section():
    plain = [{k: v for k, v in p.items() if k not in ("labels", "kpis")} for p in TIMELINE]
    md = summary_markdown(_state(phase=Phase.PROMOTED, timeline=plain))
    assert "label coverage" not in md and "Labels over time" not in md and "KPI" not in md
    assert 'title "p95 latency (ms)"' in md  # the existing charts are still there


def test_live_table_shows_the_label_metric_coverage_and_kpis_when_configured():
    st = _state(phase=Phase.PROGRESSING, step=1, weight=25.0)
    observed = {"event": "observed", "outcome": "inconclusive", **TIMELINE[-1]}
    text = _text(live_table(st, observed))
    header = next(line for line in text.splitlines() if "version" in line)
    assert "tpr" in header and "labelled (coverage)" in header and "KPI ctr" in header
    canary = next(line for line in text.splitlines() if "canary" in line and "v7" in line)
    champion = next(line for line in text.splitlines() if "champion" in line and "v6" in line)
    assert re.search(r"0\.85\s+3,000 \(75\.00%\)\s+0\.027\s+.*labels=25", canary)
    assert re.search(r"0\.951\s+28,800 \(80\.00%\)\s+0\.03\s", champion)
    # without analysis.labels nor KPIs the table keeps its columns
    plain = {k: v for k, v in observed.items() if k not in ("labels", "kpis")}
    assert "labelled" not in _text(live_table(st, plain))
