"""How a rollout shows itself: one line per event, a live table, a Markdown job summary.

Usage::

    from rich.live import Live
    view = LiveView()
    with Live(view.render(st), refresh_per_second=4) as live:
        ctx.listeners.append(lambda st, entry: live.update(view.update(st, entry)))

``event_line`` is the plain form (CI logs, pipes, tests); ``live_table`` renders the same
numbers as one table that a terminal redraws each tick; ``summary_markdown`` is the
GitHub job summary: one table per step and Mermaid charts of the metrics over time.
"""

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
        evs = " ".join(f"e_{k}={v:.3g}" for k, v in ev.items()) if isinstance(ev, dict) else ""
        return (f"step {entry['step'] + 1}    {entry['weight']:g}%  canary n={entry.get('canary_requests', 0)} "
                f"err={_fmt(entry.get('canary_error_rate'), pct=True)} p95={_fmt(entry.get('canary_p95_ms'), unit='ms')} | "
                f"champion n={entry.get('champion_requests', 0)} err={_fmt(entry.get('champion_error_rate'), pct=True)} "
                f"p95={_fmt(entry.get('champion_p95_ms'), unit='ms')}  {entry['outcome']} {evs}").rstrip()
    if e == "shadow_observed":
        return (f"shadow    v{entry.get('version', '?')} {entry.get('percent', 100):g}% mirrored  "
                f"n={entry.get('requests', 0)} agree={_fmt(entry.get('agreement'), pct=True)} "
                f"errors={entry.get('errors', 0)}  {entry.get('seconds', 0):.0f}s")
    if e in ("step_passed",):
        if entry.get("shadow"):
            return "pass      shadow phase"
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


class LiveView:
    """Keeps what the live table shows: the latest reading and the last few event lines."""

    def __init__(self, lines: int = 6) -> None:
        self.observed: dict | None = None
        self.shadow: dict | None = None
        self.lines: list[str] = []
        self.keep = lines

    def update(self, st: RolloutState, entry: dict):
        """Take one event; return the table to show now."""
        if entry["event"] == "observed":
            self.observed = entry
        elif entry["event"] == "shadow_observed":
            self.shadow = entry
        elif entry["event"] in ("step_started", "rollback_started"):
            self.observed = None
        line = event_line(entry)
        if line and entry["event"] not in ("observed", "shadow_observed"):
            self.lines = (self.lines + [line])[-self.keep:]
        return live_table(st, self.observed, self.shadow, self.lines)

    def render(self, st: RolloutState):
        return live_table(st, self.observed, self.shadow, self.lines)


def _e(v: Any) -> str:
    return "-" if v is None else f"{v:.3g}"


def live_table(st: RolloutState, observed: dict | None = None, shadow: dict | None = None, lines: list[str] = ()):
    """A rich Table of the rollout now: phase and step, weights, and per version the
    requests, error rate and p95 of the current step, with the analysis' e-values."""
    from rich.table import Table

    phase = st.phase.value
    if st.phase.value == "progressing":
        where = f"step {st.step + 1} at {st.weight:g}%"
    elif st.phase.value == "shadow":
        where = "shadow (mirrored traffic only)"
    else:
        where = phase.replace("_", " ")
    champ = f"v{st.champion}" if st.champion is not None else "nothing"
    table = Table(title=f"rollout {st.env}: v{st.canary} replaces {champ} - {where}", title_justify="left",
                  caption="\n".join(lines) if lines else None, caption_justify="left")
    for col, justify in (("version", "left"), ("role", "left"), ("weight", "right"), ("requests", "right"),
                         ("error rate", "right"), ("p95", "right"), ("e-values vs champion", "left")):
        table.add_column(col, justify=justify)
    o = observed or {}
    ev = " ".join(f"{k}={_e(v)}" for k, v in (o.get("e_values") or {}).items()) or "-"
    canary_weight = st.weight if st.phase.value in ("progressing", "promoting", "promoted") else 0.0
    if st.champion is not None:
        table.add_row(f"v{st.champion}", "champion", f"{100 - canary_weight:g}%", _fmt(o.get("champion_requests")),
                      _fmt(o.get("champion_error_rate"), pct=True), _fmt(o.get("champion_p95_ms"), unit=" ms"), "")
    table.add_row(f"v{st.canary}", "canary", f"{canary_weight:g}%", _fmt(o.get("canary_requests")),
                  _fmt(o.get("canary_error_rate"), pct=True), _fmt(o.get("canary_p95_ms"), unit=" ms"),
                  f"{ev}  ({o['outcome']})" if o.get("outcome") else ev)
    if shadow is not None and st.phase.value == "shadow":
        table.add_row(f"v{st.canary}", "shadow", f"{shadow.get('percent', 100):g}% mirror", _fmt(shadow.get("requests")),
                      f"{shadow.get('errors', 0)} errors", "", f"agreement {_fmt(shadow.get('agreement'), pct=True)}")
    return table


def _step_table(s: dict) -> list[str]:
    if s.get("step") == "shadow":
        return ["| | shadow |", "|---|---|",
                f"| mirrored | {s.get('shadow_percent', 100):g}% |",
                f"| mirrored requests | {s.get('shadow_requests', '-')} |",
                f"| agreement with the champion | {_fmt(s.get('shadow_agreement'), pct=True)} |",
                f"| shadow errors | {s.get('shadow_errors', '-')} |",
                f"| seconds | {_fmt(s.get('seconds'))} |"]
    ev = s.get("e_values") or {}
    rows = ["| | canary | champion |", "|---|---|---|",
            f"| weight | {s.get('weight', 0):g}% | {100 - s.get('weight', 0):g}% |",
            f"| requests | {s.get('canary_requests', '-')} | {s.get('champion_requests', '-')} |",
            f"| error rate | {_fmt(s.get('canary_error_rate'), pct=True)} | {_fmt(s.get('champion_error_rate'), pct=True)} |",
            f"| p95 | {_fmt(s.get('canary_p95_ms'), unit=' ms')} | {_fmt(s.get('champion_p95_ms'), unit=' ms')} |"]
    for name, value in ev.items():
        rows.append(f"| e-value ({name}) | {_e(value)} | |")
    rows.append(f"| seconds | {_fmt(s.get('seconds'))} | |")
    return rows


def _chart(title: str, y: str, xs: list[str], series: list[list[float]]) -> list[str]:
    return ["```mermaid", "xychart-beta", f'    title "{title}"', f"    x-axis [{', '.join(xs)}]", f'    y-axis "{y}"',
            *(f"    line [{', '.join(f'{v:.3g}' for v in line)}]" for line in series), "```"]


def summary_markdown(st: RolloutState) -> str:
    """The GitHub job summary: outcome, a table per step, charts of the metrics over time."""
    head = {"promoted": "promoted", "rolled_back": "rolled back", "aborted": "stopped"}.get(st.phase.value, st.phase.value)
    lines = [f"## Rollout of {st.model} v{st.canary} to {st.env}: {head}", ""]
    if st.reason:
        lines += [f"**Reason:** {st.reason}", ""]
    for s in st.steps:
        name = "Shadow phase" if s.get("step") == "shadow" else f"Step {s.get('step')}: {s.get('weight', 0):g}%"
        lines += [f"### {name}: {s.get('verdict')}", "", *_step_table(s), ""]
    pts = [p for p in st.timeline if p.get("canary_requests") is not None]
    if len(pts) >= 2:
        pts = pts[::max(1, len(pts) // 40)]  # Mermaid charts stay readable up to ~40 points
        xs = [f"{p['t']:.0f}" for p in pts]
        lines += ["### Metrics over time (seconds since the start)", "",
                  "Canary first line, champion second.", ""]
        lines += _chart("p95 latency (ms)", "ms", xs, [[p.get("canary_p95_ms") or 0 for p in pts],
                                                      [p.get("champion_p95_ms") or 0 for p in pts]])
        lines += [""] + _chart("error rate (%) in the step so far", "%", xs,
                               [[100 * (p.get("canary_error_rate") or 0) for p in pts],
                                [100 * (p.get("champion_error_rate") or 0) for p in pts]])
        lines += [""] + _chart("canary weight (%)", "%", xs, [[p.get("weight") or 0 for p in pts]])
    if st.record_path:
        lines += ["", f"Record: `{st.record_path}`" + (f" in commit `{st.commit[:12]}`" if st.commit else "")]
    return "\n".join(lines)
