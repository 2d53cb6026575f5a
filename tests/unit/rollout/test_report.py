"""What people see of a rollout: the live terminal table and the GitHub job summary."""

from __future__ import annotations

import io
import re

from rich.console import Console

from promotion.rollout import Phase, RolloutState
from promotion.rollout.report import LiveView, event_line, live_table, summary_markdown


def _state(**kw) -> RolloutState:
    base = dict(env="prod", model="fraud-detector", canary=7, canary_digest="sha256:" + "7" * 64, champion=6,
                champion_digest="sha256:" + "6" * 64, source_commit=None, policy_digest="sha256:" + "0" * 64,
                started_at=1000.0)
    return RolloutState(**{**base, **kw})


def _text(renderable) -> str:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(renderable)
    return out.getvalue().replace("│", " ")  # cells, not borders


OBSERVED = {"event": "observed", "env": "prod", "step": 1, "weight": 25.0, "outcome": "inconclusive",
            "canary_requests": 412, "canary_error_rate": 0.0121, "canary_p95_ms": 3.42,
            "champion_requests": 1230, "champion_error_rate": 0.0098, "champion_p95_ms": 3.1,
            "e_values": {"errors": 2.5, "latency": 0.61, "srm": 1.02}}


def test_live_table_shows_step_weights_requests_error_rate_p95_and_e_values():
    st = _state(phase=Phase.PROGRESSING, step=1, weight=25.0)
    text = _text(live_table(st, OBSERVED))
    assert "rollout prod: v7 replaces v6 - step 2 at 25%" in text
    champion = next(line for line in text.splitlines() if "champion" in line and "v6" in line)
    canary = next(line for line in text.splitlines() if "canary" in line and "v7" in line)
    assert re.search(r"75%\s.*1230\s.*0\.98%\s.*3\.1 ms", champion)
    assert re.search(r"25%\s.*412\s.*1\.21%\s.*3\.42 ms\s.*errors=2\.5 latency=0\.61 srm=1\.02\s+\(inconclusive\)", canary)


def test_live_view_follows_events_and_shows_the_shadow_phase():
    view = LiveView()
    st = _state(phase=Phase.SHADOW)
    text = _text(view.update(st, {"event": "shadow_observed", "version": 7, "percent": 50, "requests": 240,
                                  "agreement": 0.9875, "errors": 0, "seconds": 4.0}))
    assert "shadow (mirrored traffic only)" in text
    assert re.search(r"v7\s+shadow\s+50% mirror\s+240\s+0 errors\s+agreement 98\.75%", text)
    assert re.search(r"v6\s+champion\s+100%", text)
    # a new step clears the previous step's numbers; the event shows under the table
    st = _state(phase=Phase.PROGRESSING, step=0, weight=5.0)
    view.update(st, {**OBSERVED, "step": 0, "weight": 5.0})
    text = _text(view.update(st, {"event": "step_started", "step": 0, "weight": 5.0}))
    assert "412" not in text and "step 1 at 5%" in text
    st = _state(phase=Phase.ROLLING_BACK, weight=0.0)
    text = _text(view.update(st, {"event": "rollback_started", "reason": "error rate regressed: canary 9% vs 1%"}))
    assert "ROLLBACK  error rate regressed" in text and re.search(r"v7\s+canary\s+0%", text)


def test_plain_lines_carry_the_e_values():
    line = event_line({**OBSERVED, "outcome": "pass"})
    assert line.startswith("step 2    25%  canary n=412 err=1.21% p95=3.42ms")
    assert line.endswith("pass e_errors=2.5 e_latency=0.61 e_srm=1.02")


def test_job_summary_has_a_table_per_step_and_mermaid_charts():
    steps = [
        {"step": "shadow", "weight": 0.0, "seconds": 12.0, "shadow_percent": 100, "shadow_requests": 812,
         "shadow_agreement": 0.995, "shadow_errors": 0, "verdict": "pass"},
        {"step": 1, "weight": 5.0, "seconds": 31.0, "canary_requests": 320, "champion_requests": 6100,
         "canary_error_rate": 0.0094, "champion_error_rate": 0.0101, "canary_p95_ms": 3.2, "champion_p95_ms": 3.1,
         "e_values": {"errors": 0.4, "latency": 0.9}, "verdict": "pass"},
        {"step": 2, "weight": 25.0, "seconds": 9.0, "canary_requests": 410, "champion_requests": 1200,
         "canary_error_rate": 0.21, "champion_error_rate": 0.01, "canary_p95_ms": 3.3, "champion_p95_ms": 3.0,
         "e_values": {"errors": 3.1e6, "latency": 1.1}, "verdict": "fail"},
    ]
    timeline = [{"t": float(t), "weight": 5.0 if t < 3 else 25.0, "canary_requests": 10 * t, "canary_p95_ms": 3.0 + t / 10,
                 "champion_p95_ms": 3.0, "canary_error_rate": 0.01 * t, "champion_error_rate": 0.01} for t in range(5)]
    st = _state(phase=Phase.ROLLED_BACK, steps=steps, timeline=timeline, reason="error rate regressed",
                record_path="environments/records/prod/0003.json", commit="abcdef0123456789")
    md = summary_markdown(st)
    assert md.startswith("## Rollout of fraud-detector v7 to prod: rolled back")
    assert "**Reason:** error rate regressed" in md
    headings = re.findall(r"^### (.*)$", md, flags=re.M)
    assert headings[:3] == ["Shadow phase: pass", "Step 1: 5%: pass", "Step 2: 25%: fail"]
    # one table under each step heading
    sections = re.split(r"^### ", md, flags=re.M)[1:4]
    for section in sections:
        assert re.search(r"^\|.*\|\n\|---", section, flags=re.M), section
    assert "| agreement with the champion | 99.50% |" in sections[0]
    assert "| requests | 320 | 6100 |" in sections[1] and "| p95 | 3.2 ms | 3.1 ms |" in sections[1]
    assert "| error rate | 21.00% | 1.00% |" in sections[2] and "| e-value (errors) | 3.1e+06 | |" in sections[2]
    charts = re.findall(r"```mermaid\n(.*?)```", md, flags=re.S)
    assert len(charts) == 3 and all(c.startswith("xychart-beta") for c in charts)
    assert "x-axis [0, 1, 2, 3, 4]" in charts[0] and "line [3, 3.1, 3.2, 3.3, 3.4]" in charts[0]
    assert "line [0, 1, 2, 3, 4]" in charts[1]  # canary error rate in percent
    assert "line [5, 5, 5, 25, 25]" in charts[2]
    assert md.rstrip().endswith("Record: `environments/records/prod/0003.json` in commit `abcdef012345`")


def test_job_summary_without_enough_points_has_no_chart():
    st = _state(phase=Phase.PROMOTED, steps=[], timeline=[{"t": 0.0, "weight": 5.0, "canary_requests": 3}])
    assert "```mermaid" not in summary_markdown(st)
