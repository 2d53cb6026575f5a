"""What each decision looks like as a notification: rollout events, gate verdicts, an
operator's rollback and reconcile drift become :class:`~promotion.notify.base.Message`.

The rollout controller calls its listeners with ``(state, event)``; :class:`RolloutListener`
turns the events people act on into messages (``planned``/``bootstrap`` -> started,
``step_passed``, ``promoted``, ``rolled_back`` -> rollback or rejected, with the evidence
that triggered it as value vs threshold; ``rollback_blocked`` -> rollback, the switch
failed) and leaves the rest (routing, observed, windows) to the event log.

Every message links the pull request, the workflow run and the record where they are
known (:func:`links`): in GitHub Actions from ``GITHUB_SERVER_URL``,
``GITHUB_REPOSITORY``, ``GITHUB_RUN_ID`` and the merge commit's ``#N``.

Usage::

    ctx.listeners.append(RolloutListener(notifier, project.root))
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from promotion.notify.base import Evidence, Message

_PR_IN_SUBJECT = re.compile(r"(?:Merge pull request #|\(#)(\d+)")


def _repo_url() -> str | None:
    repo = os.environ.get("GITHUB_REPOSITORY")
    if not repo or not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repo):
        return None
    return f"{os.environ.get('GITHUB_SERVER_URL', 'https://github.com').rstrip('/')}/{repo}"


def run_url() -> str | None:
    """The workflow run's page, in GitHub Actions."""
    base, run_id = _repo_url(), os.environ.get("GITHUB_RUN_ID", "")
    return f"{base}/actions/runs/{run_id}" if base and run_id.isdigit() else None


def pull_number(root: Path | None, commit: str | None) -> int | None:
    """The pull request that made ``commit``: ``#N`` in its subject (merge or squash commit)."""
    if not root or not commit:
        return None
    from promotion._internal.git import Git

    try:
        subject = Git(root)("log", "-1", "--format=%s", commit)
    except Exception:  # noqa: BLE001 - a link is a convenience: no commit, no link
        return None
    m = _PR_IN_SUBJECT.search(subject or "")
    return int(m.group(1)) if m else None


def links(*, pr: int | None = None, record: str | None = None, root: Path | None = None) -> tuple[tuple[str, str], ...]:
    """(label, url) for the pull request, the workflow run and the record, where known."""
    out: list[tuple[str, str]] = []
    base = _repo_url()
    if base and pr:
        out.append((f"Pull request #{pr}", f"{base}/pull/{pr}"))
    if run_url():
        out.append(("Workflow run", run_url()))
    if record:
        rel = record
        if root:
            try:
                rel = Path(record).resolve().relative_to(Path(root).resolve()).as_posix()
            except ValueError:
                pass
        # the branch, not the commit: the record's commit is pushed (maybe rebased) after this
        branch = os.environ.get("GITHUB_REF_NAME") or "main"
        out.append(("Record", f"{base}/blob/{branch}/{rel}" if base else rel))
    return tuple(out)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def triggered(evidence: dict | None) -> tuple[Evidence, ...]:
    """The tests in a rollback's evidence that fired (e-value >= threshold), as value vs threshold."""
    ev = evidence or {}
    out: list[Evidence] = []

    def fired(node: Any) -> bool:
        e, t = _num((node or {}).get("e_value")), _num((node or {}).get("threshold"))
        return e is not None and t is not None and e >= t

    slo = ev.get("slo") or {}
    er = slo.get("error_rate") or {}
    if fired(er):
        rate = er["errors"] / er["requests"] if _num(er.get("requests")) else None
        out.append(Evidence("error-rate SLO", rate, er.get("objective"), ">",
                            f"error-rate SLO: canary {_pct(rate)} over {er.get('requests', 0):,.0f} requests vs "
                            f"objective {_pct(_num(er.get('objective')))} (e={er['e_value']:.3g} >= {er['threshold']:g})"))
    lat = slo.get("latency_p95") or {}
    if fired(lat):
        share = lat["slower"] / lat["observed"] if _num(lat.get("observed")) else None
        out.append(Evidence("p95 latency SLO", share, 0.05, ">",
                            f"p95 latency SLO: {_pct(share)} of canary requests over {lat.get('tested_bound_ms')} ms, "
                            f"objective p95 <= {lat.get('objective_ms')} ms (e={lat['e_value']:.3g} >= {lat['threshold']:g})"))
    errs = ev.get("errors_vs_champion") or {}
    if fired(errs):
        c, b = _num(errs.get("canary_error_rate")), _num(errs.get("champion_error_rate"))
        out.append(Evidence("errors vs champion", c, b, ">",
                            f"error rate vs champion: canary {_pct(c)} vs champion {_pct(b)} "
                            f"(x{errs.get('min_ratio')} allowed; e={errs['e_value']:.3g} >= {errs['threshold']:g})"))
    lvc = ev.get("latency_vs_champion") or {}
    if fired(lvc):
        c, b = _num(lvc.get("canary_quantile_ms")), _num(lvc.get("champion_quantile_ms"))
        out.append(Evidence("latency vs champion", c, b, ">",
                            f"latency vs champion: canary p{(lvc.get('quantile') or 0) * 100:g} {c} ms vs champion "
                            f"{b} ms (x{lvc.get('ratio')} allowed; e={lvc['e_value']:.3g} >= {lvc['threshold']:g})"))
    srm = ev.get("srm") or {}
    if fired(srm):
        out.append(Evidence("sample ratio", srm.get("observed_share"), srm.get("weight"), "!=",
                            f"sample ratio mismatch: canary got {_pct(_num(srm.get('observed_share')))} of traffic at "
                            f"weight {_pct(_num(srm.get('weight')))} (e={srm['e_value']:.3g} >= {srm['threshold']:g})"))
    shadow = ev.get("shadow") or {}
    if shadow:
        agreement, need = _num(shadow.get("agreement")), _num(shadow.get("min_agreement"))
        out.append(Evidence("shadow", agreement, need, "<",
                            f"shadow: {shadow.get('errors', 0)} errors, agreement {_pct(agreement)}"
                            + (f" vs {_pct(need)} required" if need is not None else "")
                            + f" over {shadow.get('requests', 0)} mirrored requests"))
    return tuple(out)


class RolloutListener:
    """A controller listener: the events people act on, as messages to ``notifier``."""

    def __init__(self, notifier, root: Path | None = None) -> None:
        self.notifier = notifier
        self.root = root
        self._pr: dict[str, int | None] = {}

    def _links(self, st, record: str | None = None):
        if st.source_commit not in self._pr:
            self._pr[st.source_commit] = pull_number(self.root, st.source_commit)
        return links(pr=self._pr[st.source_commit], record=record, root=self.root)

    def __call__(self, st, entry: dict) -> None:
        try:
            message = self.message(st, entry)
        except Exception:  # noqa: BLE001 - a notification must never break the controller's tick
            return
        if message is not None:
            self.notifier.send(message)

    def message(self, st, entry: dict) -> Message | None:
        """The message for one controller event, or None for events nobody is told about."""
        event = entry.get("event")
        base = {"env": st.env, "model": st.model}
        name = f"{st.env}: {st.model}"
        if event in ("planned", "bootstrap"):
            if event == "planned" and st.champion is None:
                return None  # the bootstrap event that follows says it
            title = (f"{name} v{st.canary} rollout started (replacing v{st.champion})" if event == "planned"
                     else f"{name} v{st.canary} initial deployment")
            return Message("started", title=title, severity="info", version=st.canary, previous=st.champion,
                           facts=(("Digest", st.canary_digest[:19]), ("Commit", (st.source_commit or "?")[:10])),
                           links=self._links(st), **base)
        if event == "step_passed":
            row = st.steps[-1] if st.steps else {}
            facts = [("Weight", f"{entry.get('weight', st.weight):g}%")]
            if "canary_requests" in row:
                facts.append(("Canary requests", f"{row['canary_requests']:,}"))
            if row.get("canary_error_rate") is not None:
                facts.append(("Canary error rate", _pct(row["canary_error_rate"])))
            if row.get("canary_p95_ms") is not None:
                facts.append(("Canary p95", f"{row['canary_p95_ms']:.1f} ms"))
            step = "shadow" if entry.get("shadow") else f"step {int(entry.get('step', st.step)) + 1}"
            return Message("step_passed", title=f"{name} v{st.canary} {step} passed at {entry.get('weight', 0):g}%",
                           severity="good", version=st.canary, previous=st.champion, facts=tuple(facts),
                           links=self._links(st), **base)
        if event == "promoted":
            return Message("promoted", title=f"{name} v{st.canary} promoted (was v{st.champion})",
                           summary=f"{len(st.steps)} step(s) passed; v{st.canary} serves 100% and holds the "
                                   f"{st.env!r} alias", severity="good", version=st.canary, previous=st.champion,
                           facts=(("Digest", st.canary_digest[:19]),), links=self._links(st, st.record_path), **base)
        if event == "rolled_back":
            if st.rollback_action == "reject":
                return Message("rejected", title=f"{name} v{st.canary} rejected before any traffic moved",
                               summary=st.reason or "", severity="warning", version=st.canary, previous=st.champion,
                               links=self._links(st, st.record_path), **base)
            target = f"v{st.champion}" if st.champion is not None else "nothing (first deployment)"
            facts = [("Rejected", f"v{st.canary}"), ("Serving", target)]
            if st.switch_seconds is not None:
                facts.append(("Traffic switched in", f"{st.switch_seconds * 1000:.0f} ms"))
            return Message("rollback", title=f"{name} v{st.canary} rolled back to {target}",
                           summary=st.reason or "", severity="danger", version=st.champion, previous=st.canary,
                           facts=tuple(facts), evidence=triggered(st.evidence),
                           links=self._links(st, st.record_path), **base)
        if event == "rollback_blocked":
            return Message("rollback", title=f"{name}: rollback of v{st.canary} could not switch traffic",
                           summary=f"{entry.get('error', '')}; the next run switches first", severity="danger",
                           version=st.champion, previous=st.canary, evidence=triggered(st.evidence),
                           links=self._links(st), **base)
        return None


def gate_message(report, root: Path | None = None, pr: int | None = None) -> Message:
    """A gate verdict: PASS or BLOCKED, with each blocking check's value vs threshold."""
    from promotion.github.report import fmt_value

    blocked = [c for c in report.checks if not c.passed]
    verdict = "passed" if report.passed else "BLOCKED"
    return Message(
        "gate", env=report.environment, model=report.model, version=report.challenger, previous=report.champion,
        title=f"{report.environment}: {report.model} v{report.challenger} gates {verdict}",
        summary=("every check passed" if report.passed else f"{len(blocked)} check(s) block"),
        severity="good" if report.passed else "warning",
        facts=(("Champion", f"v{report.champion}" if report.champion is not None else "none"),
               ("Checks", f"{len(report.checks) - len(blocked)} of {len(report.checks)} pass")),
        evidence=tuple(Evidence(c.name, fmt_value(c.value), fmt_value(c.threshold), "vs",
                                f"{c.name}: {fmt_value(c.value)} vs {fmt_value(c.threshold)}: {c.message}")
                       for c in blocked[:10]),
        links=links(pr=pr, root=root))


def manual_rollback_message(result, reason: str, root: Path | None = None) -> Message:
    """An operator's rollback, once traffic moved and the record was written."""
    facts = [("Rejected", f"v{result.previous}"), ("Serving", f"v{result.target}")]
    if result.switch_seconds is not None:
        facts.append(("Traffic switched in", f"{result.switch_seconds * 1000:.0f} ms"))
    actor = os.environ.get("GITHUB_ACTOR")
    if actor:
        facts.append(("By", actor))
    return Message("rollback", env=result.env, model=result.model, version=result.target, previous=result.previous,
                   title=f"{result.env}: {result.model} rolled back by an operator to v{result.target}",
                   summary=reason, severity="danger", facts=tuple(facts),
                   links=links(record=result.record_path, root=root))


def drift_message(report, root: Path | None = None) -> Message:
    """Reconcile found the environment out of step with git."""
    routes = ", ".join(f"v{v}={w:g}%" for v, w in sorted((report.live_routes or {}).items())) or "unknown"
    return Message("drift", env=report.environment, model=report.model, version=report.desired_version,
                   title=f"{report.environment}: {report.model} drift ({report.state.value})",
                   summary="; ".join(report.problems)[:1500], severity="warning",
                   facts=(("Git", f"v{report.desired_version}"), ("Live", routes), ("Alias", f"v{report.alias}"),
                          *((("Converged", "; ".join(report.actions)),) if report.actions else ())),
                   links=links(record=report.record, root=root))
