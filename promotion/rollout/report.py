"""How a rollout shows itself: one line per event, a live table, a Markdown job summary."""

from __future__ import annotations

from typing import Any

from promotion.rollout.state import RolloutState


def _fmt(v: Any, pct: bool = False, unit: str = "") -> str:
    if v is None:
        return "-"
    if pct:
        return f"{v:.2%}"
    if isinstance(v, float):
        return f"{v:.3g}{unit}"
    return f"{v}{unit}"


def event_line(entry: dict) -> str | None:
    """A short human line for an event, or None for events too chatty to print."""
    e = entry["event"]
    if e == "planned":
        champ = f"v{entry['champion']}" if entry.get("champion") is not None else "nothing"
        return f"plan      {entry['env']}: v{entry['canary']} replaces {champ}"
    if e == "routing":
        routes = ", ".join(f"v{k}={v:g}%" for k, v in entry["routes"].items())
        shadow = f" (+ shadow v{entry['shadow']['version']})" if entry.get("shadow") else ""
        return f"traffic   {routes}{shadow}; every worker applied in {entry['applied_s'] * 1000:.0f} ms"
    if e == "observed":
        ev = entry.get("e_values") or {}
        evs = " ".join(f"{k}={v:.3g}" for k, v in ev.items()) if isinstance(ev, dict) else ""
        return (f"step {entry['step'] + 1}    {entry['weight']:g}%  canary n={entry.get('canary_requests', 0)} "
                f"err={_fmt(entry.get('canary_error_rate'), pct=True)} p95={_fmt(entry.get('canary_p95_ms'), unit='ms')} | "
                f"champion n={entry.get('champion_requests', 0)} err={_fmt(entry.get('champion_error_rate'), pct=True)} "
                f"p95={_fmt(entry.get('champion_p95_ms'), unit='ms')}  {entry['outcome']} {evs}").rstrip()
    if e in ("step_passed",):
        return f"pass      step {entry['step'] + 1} at {entry['weight']:g}%"
    if e == "rollback_started":
        return f"ROLLBACK  {entry['reason']}"
    if e == "rejected":
        return f"REJECTED  {entry['reason']}"
    if e == "promoted":
        return f"promoted  v{entry['version']}; record {entry.get('record')} in commit {str(entry.get('commit'))[:10]}"
    if e == "rolled_back":
        return f"restored  v{entry['version']}; record {entry.get('record')} in commit {str(entry.get('commit'))[:10]}"
    if e == "bootstrap":
        return f"first     v{entry['version']} is the first version here: nothing to compare with, so it serves 100%"
    if e in ("aborted", "cannot_decide", "resumed", "shadow_started", "superseded"):
        detail = entry.get("reason") or entry.get("error") or ""
        return f"{e:<9} {detail}".rstrip()
    return None


def summary_markdown(st: RolloutState) -> str:
    """The GitHub job summary: outcome, one table row per step, a chart over time."""
    head = {"promoted": "promoted", "rolled_back": "rolled back", "aborted": "stopped"}.get(st.phase.value, st.phase.value)
    lines = [f"## Rollout of {st.model} v{st.canary} to {st.env}: {head}", ""]
    if st.reason:
        lines += [f"**Reason:** {st.reason}", ""]
    lines += ["| step | weight | canary requests | canary errors | canary p95 | champion p95 | verdict |",
              "|---|---|---|---|---|---|---|"]
    for s in st.steps:
        lines.append(f"| {s.get('step')} | {s.get('weight', 0):g}% | {s.get('canary_requests', s.get('requests', '-'))} | "
                     f"{_fmt(s.get('canary_error_rate'), pct=True)} | {_fmt(s.get('canary_p95_ms'), unit=' ms')} | "
                     f"{_fmt(s.get('champion_p95_ms'), unit=' ms')} | {s.get('verdict')} |")
    pts = [p for p in st.timeline if p.get("canary_p95_ms") is not None]
    if len(pts) >= 2:
        step = max(1, len(pts) // 40)
        pts = pts[::step]
        xs = ", ".join(f"{p['t']:.0f}" for p in pts)
        can = ", ".join(f"{p['canary_p95_ms']:.2f}" for p in pts)
        cham = ", ".join(f"{(p.get('champion_p95_ms') or 0):.2f}" for p in pts)
        lines += ["", "```mermaid", "xychart-beta", '    title "p95 latency (ms): canary (first line) vs champion"',
                  f"    x-axis [{xs}]", '    y-axis "ms"', f"    line [{can}]", f"    line [{cham}]", "```"]
    if st.record_path:
        lines += ["", f"Record: `{st.record_path}`" + (f" in commit `{st.commit[:12]}`" if st.commit else "")]
    return "\n".join(lines)
