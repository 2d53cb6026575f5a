"""``promotion verify``: check record signatures (local key or keyless) and hash chains, offline."""

from __future__ import annotations

import sys
from pathlib import Path

from promotion.commands._common import emit_json

HELP = ("verify signed promotion records offline and say who signed each (a signer must have been valid "
        "when git received the record); exit 1 if any fails, 2 if a file cannot be read")


def add_arguments(parser) -> None:
    parser.add_argument("records", nargs="*", metavar="RECORD",
                        help="record files to verify (default: every record of --env, or of all environments, with chain checks)")
    parser.add_argument("--env", action="append", default=[], metavar="ENV",
                        help="verify the whole chain of this environment (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    from promotion.commands._common import project
    from promotion.errors import BadInput, VerificationError
    from promotion.records import RECORDS_DIR, RecordStore
    from promotion.records._json import UnreadableRecord
    from promotion.records.store import record_history
    from promotion.records.verify import display_path, read_record, verify_bytes

    root = project(args).root
    verified, errors, unreadable = [], [], False
    if args.records:
        paths = []
        for name in args.records:
            path = Path(name) if Path(name).is_absolute() else Path.cwd() / name
            if not path.is_file():
                raise BadInput(f"{name}: no such record file")
            paths.append(path)
        # one read of git history for all: a committed record is judged by the trust
        # file as of its commit, an uncommitted one by the work tree's
        history, added = record_history(root, paths)
        for path in paths:
            display = display_path(path, root)
            try:
                verified.append(verify_bytes(read_record(path, display), history, path=path, display=display,
                                             added=added.get(path)))
            except VerificationError as exc:
                unreadable = unreadable or isinstance(exc, UnreadableRecord)
                errors.append(exc.message)
    else:
        envs = args.env or sorted(p.name for p in (root / RECORDS_DIR).glob("*") if p.is_dir() and p.name != "keys")
        for env in envs:
            if args.env and not (root / RECORDS_DIR / env).is_dir() and not (root / "environments" / f"{env}.yaml").exists():
                raise BadInput(f"unknown environment {env!r}: no environments/{env}.yaml and no records")
            try:
                verified.extend(RecordStore(root, env).records())
            except VerificationError as exc:
                unreadable = unreadable or isinstance(exc, UnreadableRecord)
                errors.append(exc.message)

    rows = [{
        "record": _rel(r.path, root), "action": r.action, "model": r.model, "version": r.version,
        "recorded_at": r.recorded_at, "signer": r.signer, "signer_kind": r.signer_kind, "digest": r.digest,
        "added_in": r.added.sha if r.added else None,
    } for r in verified]
    if args.json:
        emit_json({"ok": not errors, "records": rows, "errors": errors})
    else:
        for row in rows:
            print(f"ok    {row['record']}: {row['action']} {row['model']} v{row['version']} "
                  f"signed by {row['signer']} ({row['signer_kind']})")
        for message in errors:
            print(f"FAIL  {message}", file=sys.stderr)
        if not rows and not errors:
            print("no records to verify")
        elif not errors:
            print(f"ok: {len(rows)} record(s) verified")
    return (2 if unreadable else 1) if errors else 0


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
