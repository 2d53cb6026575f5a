"""Record file names and the per-environment hash chain.

Records of environment ``<env>`` live in ``environments/records/<env>/``, one file per
record named ``<seq:06d>-<action>-v<version>.json``; ``seq`` starts at 1. Each record's
signed predicate repeats its sequence number and links to the previous record by name
and by the sha256 of that file's bytes, so an edited, deleted, inserted or reordered
record breaks the chain at a named file.
"""

from __future__ import annotations

import re
from pathlib import Path

RECORDS_DIR = "environments/records"
NAME_RE = re.compile(r"^(\d{6})-(promote|rollback|reject|probation_passed)-v(\d+)\.json$")


def records_dir(root: str | Path, env: str) -> Path:
    from promotion.config import check_environment_name  # a name must never climb out of records/

    return Path(root) / RECORDS_DIR / check_environment_name(env)


def record_name(sequence: int, action: str, version: int) -> str:
    return f"{sequence:06d}-{action}-v{version}.json"


def parse_name(name: str) -> tuple[int, str, int] | None:
    """``(sequence, action, version)`` from a record file name, or None."""
    m = NAME_RE.match(name)
    return (int(m.group(1)), m.group(2), int(m.group(3))) if m else None


def name_problem(name: str, predicate: dict) -> str | None:
    """Why a file name disagrees with the signed predicate (a renamed record), or None."""
    parsed = parse_name(name)
    if parsed is None:
        return "is not named <seq>-<action>-v<version>.json"
    seq, action, version = parsed
    signed = (predicate["sequence"], predicate["action"], predicate["model"]["version"])
    if (seq, action, version) != signed:
        return (f"file name says #{seq} {action} v{version} but the signed record is "
                f"#{signed[0]} {signed[1]} v{signed[2]} (renamed or reordered)")
    return None


def link_problems(records: list, env: str) -> list[tuple[object, str]]:
    """Chain problems as ``(record, message)``; ``records`` are verified and in file order."""
    problems = []
    previous = None
    expected = 1
    for record in records:
        predicate = record.predicate
        if predicate is None:
            # a record that failed verification still holds its place in the chain
            previous = record
            expected = max(expected, (parse_name(record.name) or (expected,))[0] + 1)
            continue
        issues = []
        if predicate["to_environment"] != env:
            issues.append(f"belongs to environment {predicate['to_environment']!r}, not {env!r}")
        seq = predicate["sequence"]
        if seq > expected:
            missing = record_range(expected, seq - 1)
            issues.append(f"sequence gap: record {missing} is missing before it (deleted?)")
        elif seq < expected:
            issues.append(f"sequence {seq} repeats or goes backwards (expected {expected})")
        link = predicate["previous_record"]
        if previous is None:
            if seq == 1 and link is not None:
                issues.append("is the first record but links to a previous one")
            elif seq > 1 and not issues:
                issues.append("links to a previous record that is not there")
        elif link is None:
            issues.append(f"does not link to the previous record {previous.name}")
        elif link["name"] != previous.name or link["digest"] != previous.digest:
            if link["name"] != previous.name:
                issues.append(f"links to {link['name']} but follows {previous.name} (reordered or inserted)")
            else:
                issues.append(f"chain broken: links to {previous.name} with digest {link['digest'][:19]}… "
                              f"but that file's digest is {previous.digest[:19]}… (it was edited)")
        if previous is not None and previous.predicate is not None and \
                _time(predicate["recorded_at"]) < _time(previous.predicate["recorded_at"]):
            issues.append(f"is dated {predicate['recorded_at']}, before the previous record {previous.name}")
        if issues:
            problems.append((record, "; ".join(issues)))
        previous = record
        expected = max(expected, seq + 1)
    return problems


def _time(text: str):
    from promotion.records.statement import parse_time

    return parse_time(text)


def record_range(first: int, last: int) -> str:
    return f"#{first}" if first == last else f"#{first}-#{last}"
