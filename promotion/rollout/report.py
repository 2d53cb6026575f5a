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
                f"errors={entry.get('errors', 0)}  {entry.get('seconds', 0):.0f}s{_shadow_expected(entry)}")
    if e in ("step_passed",):
        if entry.get("shadow"):
            return "pass      shadow phase"
        return f"pass      step {entry['step'] + 1} at {entry['weight']:g}%"
    if e == "experiment_ended":
        lift = entry.get("lift") or {}
        return (f"ENDED     experiment: {entry.get('kpi')} lift lower bound {_fmt(lift.get('lower'), pct=True)} "
                f"never exceeded min_effect {_fmt(entry.get('min_effect'), pct=True)}; not promoted")
    if e == "rollback_started":
        return f"ROLLBACK  {entry['reason']}"
    if e == "rejected":
        return f"REJECTED  {entry['reason']}"
    if e == "promoted":
        return f"promoted  v{entry['version']}; record {entry.get('record')} in commit {str(entry.get('commit'))[:10]}"
    if e == "rolled_back":
        return f"restored  v{entry['version']}; record {entry.get('record')} in commit {str(entry.get('commit'))[:10]}"
    if e == "probation_started":
        return f"probation {entry['reason']}"
    if e == "probation_observed":
        return (f"probation {entry.get('seconds', 0):.0f}s  canary n={entry.get('canary_requests', 0)} "
                f"err={_fmt(entry.get('canary_error_rate'), pct=True)}  {entry['outcome']}")
    if e == "probation_passed":
        return (f"passed    probation of v{entry['version']} after {entry['seconds']:.0f}s; record {entry.get('record')} "
                f"in commit {str(entry.get('commit'))[:10]}")
    if e in ("probation_skipped", "probation_ended"):
        return f"probation {entry.get('reason', '')}"
    if e == "bootstrap":
        return f"first     v{entry['version']} is the first version here: nothing to compare with, so it serves 100%"
    if e == "step_restarted":
        where = "shadow phase" if entry.get("step", 0) < 0 else f"step {entry['step'] + 1} at {entry['weight']:g}%"
        return f"restart   {where}: its weights apply only now, so its window and clock begin now"
    if e == "hook":
        where = f" (step {entry['step'] + 1})" if entry.get("step") is not None else ""
        return f"hook      {entry['stage']} {entry['name']}{where}: {entry['verdict']} in {entry['seconds']:.1f}s: {entry['message']}"
    if e == "paused":
        return f"PAUSED    step {entry['step'] + 1}: {entry['reason']}"
    if e == "resumed_by":
        return f"resumed   step {entry['step'] + 1} by {entry['actor']}: {entry['reason']}"
    if e in ("aborted", "cannot_decide", "resumed", "shadow_started", "superseded", "rollback_blocked"):
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
    o = observed or {}
    labels, kpis = o.get("labels"), o.get("kpis")
    cols = [("version", "left"), ("role", "left"), ("weight", "right"), ("requests", "right"),
            ("error rate", "right"), ("p95", "right")]
    if labels:  # analysis.labels: the metric on the labelled requests, and how many have a label
        cols += [(labels.get("metric") or "labels", "right"), ("labelled (coverage)", "right")]
    if kpis:
        cols += [(f"KPI {n}", "right") for n in kpis]
    for col, justify in cols + [("e-values vs champion", "left")]:
        table.add_column(col, justify=justify)

    def signals(role: str) -> list[str]:
        out = [_e(labels.get(role)), _labelled(labels, role)] if labels else []
        return out + [_e(_role(k, role)) for k in (kpis or {}).values()]
    ev = " ".join(f"{k}={_e(v)}" for k, v in (o.get("e_values") or {}).items()) or "-"
    canary_weight = st.weight if st.phase.value in ("progressing", "promoting", "probation", "promoted") else 0.0
    if st.champion is not None:
        table.add_row(f"v{st.champion}", "champion", f"{100 - canary_weight:g}%", _fmt(o.get("champion_requests")),
                      _fmt(o.get("champion_error_rate"), pct=True), _fmt(o.get("champion_p95_ms"), unit=" ms"),
                      *signals("champion"), "")
    table.add_row(f"v{st.canary}", "canary", f"{canary_weight:g}%", _fmt(o.get("canary_requests")),
                  _fmt(o.get("canary_error_rate"), pct=True), _fmt(o.get("canary_p95_ms"), unit=" ms"),
                  *signals("canary"), f"{ev}  ({o['outcome']})" if o.get("outcome") else ev)
    if shadow is not None and st.phase.value == "shadow":
        table.add_row(f"v{st.canary}", "shadow", f"{shadow.get('percent', 100):g}% mirror", _fmt(shadow.get("requests")),
                      f"{shadow.get('errors', 0)} errors", "", *([""] * (len(cols) - 6)),
                      f"agreement {_fmt(shadow.get('agreement'), pct=True)}" + _shadow_expected(shadow))
    return table


def _shadow_expected(shadow: dict) -> str:
    d = shadow.get("disagreement") or {}
    if d.get("cannot_decide"):
        return f"; disagreement not judged: {d['cannot_decide']}"
    if d.get("expected_rate") is None:
        return ""
    return (f"; disagreement {_fmt(d.get('observed_rate'), pct=True)} vs {_fmt(d['expected_rate'], pct=True)} "
            f"expected (e={_e(d.get('e_value'))})")


def _disagreement_rows(d: dict | None) -> list[str]:
    if not d:
        return []
    if d.get("cannot_decide"):
        return [f"| disagreement vs the gates' rate | not judged: {d['cannot_decide']} |"]
    return [f"| disagreement (observed / expected + tolerance) | {_fmt(d.get('observed_rate'), pct=True)} / "
            f"{_fmt(d.get('expected_rate'), pct=True)} + {_fmt(d.get('tolerance'), pct=True)} |",
            f"| e-value (disagreement) | {_e(d.get('e_value'))} (rolls back at {_e(d.get('threshold'))}) |"]


def _step_table(s: dict) -> list[str]:
    if s.get("step") == "shadow":
        return ["| | shadow |", "|---|---|",
                f"| mirrored | {s.get('shadow_percent', 100):g}% |",
                f"| mirrored requests | {s.get('shadow_requests', '-')} |",
                f"| agreement with the champion | {_fmt(s.get('shadow_agreement'), pct=True)} |",
                f"| shadow errors | {s.get('shadow_errors', '-')} |",
                *_disagreement_rows(s.get("shadow_disagreement")),
                f"| seconds | {_fmt(s.get('seconds'))} |"]
    ev = s.get("e_values") or {}
    rows = ["| | canary | champion |", "|---|---|---|",
            f"| weight | {s.get('weight', 0):g}% | {100 - s.get('weight', 0):g}% |",
            f"| requests | {s.get('canary_requests', '-')} | {s.get('champion_requests', '-')} |",
            f"| error rate | {_fmt(s.get('canary_error_rate'), pct=True)} | {_fmt(s.get('champion_error_rate'), pct=True)} |",
            f"| p95 | {_fmt(s.get('canary_p95_ms'), unit=' ms')} | {_fmt(s.get('champion_p95_ms'), unit=' ms')} |"]
    for name, value in ev.items():
        rows.append(f"| e-value ({name}) | {_e(value)} | |")
    for name, kpi in (s.get("kpis") or {}).items():
        rows.append(f"| KPI {name} | {_e(kpi.get('canary'))} | {_e(kpi.get('champion'))} |")
    lift = (s.get("experiment") or {}).get("lift")
    if lift:
        rows.append(f"| experiment lift (lower bound) | {_fmt(lift.get('estimate'), pct=True)} "
                    f"({_fmt(lift.get('lower'), pct=True)}) | |")
    rows.append(f"| seconds | {_fmt(s.get('seconds'))} | |")
    return rows


def _chart(title: str, y: str, xs: list[str], series: list[list[float]], span: tuple[float, float] | None = None) -> list[str]:
    y_axis = f'    y-axis "{y}"' + (f" {span[0]:g} --> {span[1]:g}" if span else "")
    return ["```mermaid", "xychart-beta", f'    title "{title}"', f"    x-axis [{', '.join(xs)}]", y_axis,
            *(f"    line [{', '.join(f'{v:.3g}' for v in line)}]" for line in series), "```"]


def _thin(pts: list[dict], most: int = 40) -> list[dict]:
    """At most about ``most`` points, the last one always kept (it is the one decided on)."""
    if len(pts) <= most:
        return pts
    kept = pts[::-(-len(pts) // most)]
    return kept if kept[-1] is pts[-1] else kept + [pts[-1]]


def _role(d: dict | None, role: str):
    return d.get(role) if isinstance(d, dict) else None


def _labelled(labels: dict, role: str) -> str:
    n = _role(labels.get("labelled"), role)
    return f"{'-' if n is None else f'{n:,.0f}'} ({_fmt(_role(labels.get('coverage'), role), pct=True)})"


def _labels_over_time(timeline: list[dict]) -> list[str]:
    """Charts of label coverage and of the label metric per version, and the same numbers
    as a table (the chart is absent where Mermaid is not rendered)."""
    pts = _thin([p for p in timeline if p.get("labels")])
    if not pts:
        return []
    metric = pts[-1]["labels"].get("metric") or "label metric"
    xs = [f"{p['t']:.0f}" for p in pts]
    out = [f"### Labels over time: {metric} and label coverage (seconds since the start)", "",
           "Canary first line, champion second. Coverage is the share of served requests with a label.", ""]
    if len(pts) >= 2:
        cov = [[100 * (_role(p["labels"].get("coverage"), r) or 0) for p in pts] for r in ("canary", "champion")]
        out += _chart("label coverage (%)", "%", xs, cov, (0, 100)) + [""]
        both = [p for p in pts if p["labels"].get("canary") is not None and p["labels"].get("champion") is not None]
        if len(both) >= 2:
            out += _chart(f"{metric} per version", metric, [f"{p['t']:.0f}" for p in both],
                          [[p["labels"][r] for p in both] for r in ("canary", "champion")]) + [""]
    out += [f"| t (s) | weight | canary {metric} | champion {metric} | canary labelled (coverage) "
            "| champion labelled (coverage) | e-value (labels) |", "|---|---|---|---|---|---|---|"]
    for p in _thin(pts, 12):  # the chart has every point; the table stays short
        lb = p["labels"]
        cells = [_labelled(lb, r) for r in ("canary", "champion")]
        out.append(f"| {p['t']:.0f} | {p.get('weight', 0):g}% | {_e(lb.get('canary'))} | {_e(lb.get('champion'))} "
                   f"| {cells[0]} | {cells[1]} | {_e((p.get('e_values') or {}).get('labels'))} |")
    return out + [""]


def _kpis_over_time(timeline: list[dict]) -> list[str]:
    """A chart per business KPI (canary, champion) over time, with its e-value last."""
    pts = _thin([p for p in timeline if p.get("kpis")])
    if not pts:
        return []
    out = ["### Business KPIs over time (seconds since the start)", "", "Canary first line, champion second.", ""]
    for name in dict.fromkeys(n for p in pts for n in p["kpis"]):
        both = [p for p in pts if _role(p["kpis"].get(name), "canary") is not None
                and _role(p["kpis"].get(name), "champion") is not None]
        if len(both) >= 2:
            out += _chart(f"KPI {name}", name, [f"{p['t']:.0f}" for p in both],
                          [[p["kpis"][name][r] for p in both] for r in ("canary", "champion")]) + [""]
        last = pts[-1]["kpis"].get(name) or {}
        out.append(f"KPI {name} at {pts[-1]['t']:.0f}s: canary {_e(last.get('canary'))}, champion "
                   f"{_e(last.get('champion'))}, e-value {_e((pts[-1].get('e_values') or {}).get('kpi:' + name))}")
        out.append("")
    return out


def summary_markdown(st: RolloutState) -> str:
    """The GitHub job summary: outcome, a table per step, charts of the metrics over time."""
    head = {"promoted": "promoted", "rolled_back": "rolled back", "aborted": "stopped"}.get(st.phase.value, st.phase.value)
    lines = [f"## Rollout of {st.model} v{st.canary} to {st.env}: {head}", ""]
    if st.reason:
        lines += [f"**Reason:** {st.reason}", ""]
    for s in st.steps:
        name = {"shadow": "Shadow phase", "probation": "Probation at 100%"}.get(
            s.get("step"), f"Step {s.get('step')}: {s.get('weight', 0):g}%")
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
        lines.append("")
    lines += _labels_over_time(st.timeline) + _kpis_over_time(st.timeline)
    if st.record_path:
        lines += ["", f"Record: `{st.record_path}`" + (f" in commit `{st.commit[:12]}`" if st.commit else "")]
    return "\n".join(lines)
