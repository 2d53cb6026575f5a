"""Labels from a dataset the environment file names, posted to the service's ``/feedback``.

A team's labelling job writes ground truth as it becomes known to a CSV or parquet file
with a request id column (the ids the service returned, :mod:`promotion.contract.feedback`)
and a label (classifiers) or value (regressors) column; the environment file names it::

    # environments/prod.yaml
    labels:
      path: data/prod-labels.csv        # relative to the repository root; .csv or .parquet
      column: label                     # or value (regressors); default: label
      request_id_column: request_id     # default
      token_env: PROMOTION_FEEDBACK_TOKEN   # default; the service's feedback token

:class:`LabelsPoller` reads only what the file gained since its last call (CSV: from the
byte after the last complete line it read; parquet: rows past the last count; a file
that shrank or was replaced is read again from the start, which the service's
idempotence makes harmless) and posts it in batches::

    from promotion.labels import LabelsPoller, LabelsSource
    source = LabelsSource.from_environment(env)          # None when the file names no labels
    poller = LabelsPoller(source, cursor=state / "labels" / "prod.json")
    poller.poll_once()    # {"accepted": 120, "duplicate": 0, "unknown": 3, "invalid": 0, "rows": 123}

A bad dataset is a :class:`~promotion.errors.ConfigError` naming the file and line (CSV)
or row (parquet) and the column: ``data/prod-labels.csv:17 label: must be a class``.
Rows whose label cell is empty are not labelled yet and are skipped.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promotion.contract import feedback as wire
from promotion.config import file_key
from promotion.errors import ConfigError, ServiceError

BATCH = 1000


@dataclass(frozen=True)
class LabelsSource:
    """Where the labels are and where they go."""

    path: Path
    display: str
    column: str            # "label" or "value" column name
    kind: str              # "label" | "value"
    request_id_column: str
    feedback_url: str
    token_env: str

    @classmethod
    def from_environment(cls, env, root: Path | None = None) -> "LabelsSource | None":
        """The ``labels`` block of an environment file (:class:`promotion.config.Environment`)."""
        from promotion._internal import yamlio

        doc = yamlio.load(env.path, env.display)
        block = (doc.data or {}).get("labels")
        if block is None:
            return None
        if not isinstance(block, dict) or not isinstance(block.get("path"), str):
            raise ConfigError(f"{doc.where(('labels', 'path'))}: must name the labels file (.csv or .parquet)")
        root = Path(root) if root is not None else Path(env.path).resolve().parents[1]
        rel = block["path"]
        path = (root / rel).resolve()
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not path.is_relative_to(root.resolve()):
            raise ConfigError(f"{doc.where(('labels', 'path'))}: must be a path inside the repository")
        if path.suffix.lower() not in (".csv", ".parquet"):
            raise ConfigError(f"{doc.where(('labels', 'path'))}: must end in .csv or .parquet")
        column = str(block.get("column", "label"))
        kind = "value" if column == "value" or block.get("kind") == "value" else "label"
        return cls(path=path, display=rel, column=column, kind=kind,
                   request_id_column=str(block.get("request_id_column", wire.REQUEST_ID_FIELD)),
                   feedback_url=env.endpoint.rstrip("/") + wire.FEEDBACK_PATH,
                   token_env=str(block.get("token_env", wire.FEEDBACK_TOKEN_ENV)))


def _cell(raw: str, kind: str) -> Any:
    """A CSV cell as the label or value it stands for."""
    text = raw.strip()
    if kind == "value":
        try:
            return float(text)
        except ValueError:
            return text  # parse_batch names it
    if re.fullmatch(r"[+-]?\d{1,18}", text):
        return int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


class LabelsPoller:
    """Incremental reader of a :class:`LabelsSource`; its cursor is kept in ``cursor``."""

    def __init__(self, source: LabelsSource, cursor: str | Path, *, session=None, timeout_s: float = 30.0) -> None:
        import requests

        self.source = source
        self.cursor_path = Path(cursor)
        self.session = session or requests.Session()
        self.timeout_s = timeout_s

    def _cursor(self) -> dict:
        try:
            data = json.loads(self.cursor_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, cursor: dict) -> None:
        from promotion._internal.atomic import atomic_write

        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.cursor_path, json.dumps(cursor))

    def read_new(self) -> tuple[list[tuple[str, dict]], dict]:
        """``([(where, item)], next cursor)``: rows added since the cursor, each with its
        ``file:line`` (or ``file row n``) for messages."""
        s = self.source
        try:
            st = s.path.stat()
        except OSError as exc:
            raise ConfigError(f"{s.display}: labels file cannot be read ({exc.strerror or exc})") from None
        cursor = self._cursor()
        same = cursor.get("inode") == st.st_ino and cursor.get("size", 0) <= st.st_size
        if s.path.suffix.lower() == ".parquet":
            return self._parquet(st, cursor if same else {})
        return self._csv(st, cursor if same else {})

    def _csv(self, st, cursor: dict) -> tuple[list[tuple[str, dict]], dict]:
        s = self.source
        with open(s.path, "rb") as fh:
            head = fh.readline()
            offset = max(int(cursor.get("offset", 0)), len(head))
            line = int(cursor.get("line", 1))
            fh.seek(offset)
            data = fh.read(st.st_size - offset)
        header = next(csv.reader([head.decode("utf-8-sig", errors="replace")]), [])
        idx = self._columns(header, f"{s.display}:1")
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        out = []
        for raw in data[:end].decode("utf-8", errors="replace").splitlines():
            line += 1
            cells = next(csv.reader([raw]), [])
            if not cells:
                continue
            item = self._item(cells, idx, f"{s.display}:{line}")
            if item is not None:
                out.append((f"{s.display}:{line}", item))
        return out, {"inode": st.st_ino, "size": offset + end, "offset": offset + end, "line": line}

    def _parquet(self, st, cursor: dict) -> tuple[list[tuple[str, dict]], dict]:
        import pyarrow.parquet as pq

        s = self.source
        try:
            table = pq.read_table(s.path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError...
            raise ConfigError(f"{s.display}: not a readable parquet file ({str(exc)[:200]})") from exc
        done = int(cursor.get("rows", 0))
        if done > table.num_rows:
            done = 0
        names = table.column_names
        idx = self._columns(names, f"{s.display} row 0")
        cols = [table.column(names[i]).to_pylist()[done:] for i in idx]
        out = []
        for n, cells in enumerate(zip(*cols)):
            where = f"{s.display} row {done + n + 1}"
            item = self._item([None if c is None else str(c) if not isinstance(c, (int, float, bool)) else c
                               for c in cells], (0, 1), where, typed=True)
            if item is not None:
                out.append((where, item))
        return out, {"inode": st.st_ino, "size": st.st_size, "rows": table.num_rows}

    def _columns(self, header: list[str], where: str) -> tuple[int, int]:
        s = self.source
        missing = [c for c in (s.request_id_column, s.column) if c not in header]
        if missing:
            raise ConfigError(f"{where} {missing[0]}: column missing (columns: {', '.join(header) or 'none'})")
        return header.index(s.request_id_column), header.index(s.column)

    def _item(self, cells: list, idx: tuple[int, int], where: str, typed: bool = False) -> dict | None:
        s = self.source
        rid = cells[idx[0]] if idx[0] < len(cells) else None
        raw = cells[idx[1]] if idx[1] < len(cells) else None
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None  # not labelled yet
        if not isinstance(rid, str) or not rid.strip():
            raise ConfigError(f"{where} {s.request_id_column}: empty (every labelled row needs its request id)")
        value = raw if typed and not isinstance(raw, str) else _cell(str(raw), s.kind)
        item = {wire.REQUEST_ID_FIELD: rid.strip(), s.kind: value}
        try:
            wire.parse_batch([item])
        except wire.FeedbackInputError as exc:
            field = s.request_id_column if "request_id" in str(exc) else s.column
            raise ConfigError(f"{where} {field}: {str(exc).split(': ', 1)[-1]}") from None
        return item

    def poll_once(self) -> dict[str, int]:
        """Post what the file gained; the summed answers plus ``rows`` read. The cursor
        moves only when every batch was answered (after a failure all is sent again, and
        the service counts what it already has as duplicates)."""
        rows, cursor = self.read_new()
        totals = dict.fromkeys(("accepted", "duplicate", "unknown", "invalid"), 0)
        for i in range(0, len(rows), BATCH):
            answer = self._post([item for _, item in rows[i:i + BATCH]])
            for k in totals:
                totals[k] += int(answer.get(k, 0))
        self._save(cursor)
        return {**totals, "rows": len(rows)}

    def _post(self, items: list[dict]) -> dict:
        import requests

        s = self.source
        token = os.environ.get(s.token_env)
        if not token:
            raise ConfigError(f"{s.token_env}: not set (the service's feedback token)")
        try:
            r = self.session.post(s.feedback_url, data=json.dumps(items), timeout=self.timeout_s,
                                  headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        except requests.RequestException as exc:
            raise ServiceError(f"POST {s.feedback_url}: {type(exc).__name__}") from exc
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code != 200:
            msg = (body.get("error") or {}).get("message", "") if isinstance(body, dict) else ""
            raise ServiceError(f"POST {s.feedback_url}: HTTP {r.status_code} {msg}".rstrip())
        return body if isinstance(body, dict) else {}


def _main(argv: list[str] | None = None) -> int:
    """``python -m promotion.labels <env>``: one poll of the environment's labels."""
    import argparse

    from promotion._internal.paths import state_dir
    from promotion.config import Project
    from promotion.errors import Error

    parser = argparse.ArgumentParser(prog="python -m promotion.labels")
    parser.add_argument("environment")
    args = parser.parse_args(argv)
    try:
        project = Project.discover()
        env = project.environment(args.environment)
        source = LabelsSource.from_environment(env)
        if source is None:
            raise ConfigError(f"{env.display}: names no labels dataset (labels.path)")
        result = LabelsPoller(source, state_dir() / "labels" / f"{file_key(env.name)}.json").poll_once()
    except Error as exc:
        print(exc.diagnostics(), file=__import__("sys").stderr)
        return exc.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

__all__ = ["LabelsSource", "LabelsPoller", "BATCH"]
