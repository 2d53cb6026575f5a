"""What served each request id, on disk, so that a label sent to any worker finds it.

BentoML runs several worker processes, each with its own memory, and ``POST /feedback``
may reach another worker than the one that served the prediction. So each worker
appends one line per served row to its own journal, ``<state>/requests/<pid>.jsonl``,
with one unbuffered ``write`` per request (the line is on disk for every other worker
when the response leaves; about 3 µs), and the feedback handler of any worker reads
every worker's journal from where it last stopped (:class:`RequestIndex`) into a
bounded in-memory index::

    journal = RequestJournal(state_dir)
    journal.record(7, ["ab12"], [0.93], [1], classes=[1], segments=None)
    index = RequestIndex(state_dir, size=200_000)
    index.get("ab12")        # Served(version=7, ts=…, score=0.93, prediction=1, classes=[1], segment=None)

A line is a JSON array ``[id, version, ts, score, prediction, classes, segment]``, where
``classes`` is ``null`` for a regressor's row, ``[positive class]`` for a binary
classifier's and ``[]`` for another classifier's. A
journal that grows past ``max_bytes`` is renamed to ``<pid>.jsonl.1`` (one older file is
kept); readers follow files by inode, so a rename loses no line. The index keeps the
newest ``size`` ids (oldest evicted first): a label for an older request is reported as
unknown. An id served twice (a client reusing its ``X-Request-Id``, a retry) is
ambiguous and joins nothing (:data:`AMBIGUOUS`): otherwise a client could re-point
another client's label at a row of its choosing. The journals of workers that are gone
are kept for their late labels, the newest :data:`KEEP_DEAD` files of them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("bentoml.promotion_router")

DEFAULT_MAX_BYTES = 32 << 20
MAX_SEGMENT_CHARS = 64
KEEP_DEAD = 8  # journal files of exited workers kept (each at most max_bytes)


def directory(state_dir: str | Path) -> Path:
    return Path(state_dir) / "requests"


@dataclass(frozen=True, slots=True)
class Served:
    """What answered one row: the version, when, its score, prediction, classes and segment."""

    version: int
    ts: float
    score: float | None
    prediction: Any
    classes: list | None
    segment: str | None


def _json_value(v: Any) -> str:
    t = type(v)
    if t is int:
        return str(v)
    if t is float:
        return repr(v) if math.isfinite(v) else "null"
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    return json.dumps(v if t is str else str(v) if not hasattr(v, "item") else v.item(), default=str)


def segment_value(v: Any) -> str | None:
    """A segment column's value as the journal and the metrics keep it (a bounded string)."""
    if v is None or v.__class__.__name__ == "_Missing":
        return None
    if type(v) is float and v.is_integer():
        v = int(v)  # 1.0 and 1 are one segment
    return str(v)[:MAX_SEGMENT_CHARS]


# what the index holds for an id that was served more than once
AMBIGUOUS = Served(-1, 0.0, None, None, None, None)


class RequestJournal:
    """One worker's append-only journal of served rows (one ``write`` per request)."""

    def __init__(self, state_dir: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, pid: int | None = None) -> None:
        self.dir = directory(state_dir)
        self.max_bytes = max_bytes
        self.pid = pid or os.getpid()
        self._fd: int | None = None
        self._size = 0
        self._lock = threading.Lock()

    def _open(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        prune(self.dir, self.pid)
        fd = os.open(self.dir / f"{self.pid}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(fd).st_size
        self._fd = fd
        return fd

    def record(self, version: int, ids: list[str], scores: list | None, predictions: list,
               classes: list | None, segments: list | None) -> None:
        """Append one line per row of a served request (``classes``: see the module docstring)."""
        ts = repr(round(time.time(), 3))
        v = str(version)
        pos = "null" if classes is None else "[" + ",".join(_json_value(c) for c in classes) + "]"
        parts = []
        for i, rid in enumerate(ids):  # ids are validated tokens: no escaping needed
            score = "null" if scores is None else _json_value(scores[i])
            seg = "null" if segments is None or segments[i] is None else _json_value(segments[i])
            parts.append(f'["{rid}",{v},{ts},{score},{_json_value(predictions[i])},{pos},{seg}]\n')
        data = "".join(parts).encode()
        with self._lock:
            fd = self._fd if self._fd is not None else self._open()
            os.write(fd, data)
            self._size += len(data)
            if self._size > self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        path = self.dir / f"{self.pid}.jsonl"
        os.close(self._fd)
        self._fd = None
        try:
            os.replace(path, path.with_name(path.name + ".1"))
        except OSError:
            log.exception("cannot rotate %s", path)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, another user's
    return True


def prune(folder: Path, own_pid: int, keep: int = KEEP_DEAD) -> None:
    """Delete the journals of exited workers but the newest ``keep`` (restarts would
    otherwise leave one more pair of files each time)."""
    dead = []
    for path in folder.glob("*.jsonl*"):
        pid = path.name.split(".", 1)[0]
        if not pid.isdigit() or int(pid) == own_pid or _alive(int(pid)):
            continue
        try:
            dead.append((path.stat().st_mtime, path))
        except OSError:
            continue
    for _, path in sorted(dead, reverse=True)[keep:]:
        try:
            path.unlink()
        except OSError:
            pass


class Tail:
    """New complete lines of the files matching ``patterns`` in ``folder``, followed by
    inode (a renamed file is read on from where it was left; a new one from its start)."""

    def __init__(self, folder: Path, patterns: tuple[str, ...]) -> None:
        self.folder = folder
        self.patterns = patterns
        self._offsets: dict[tuple[int, int], int] = {}

    def _files(self) -> list[tuple[tuple[int, int], Path, int]]:
        found: dict[tuple[int, int], tuple[float, str, Path, int]] = {}
        for pattern in self.patterns:
            for path in self.folder.glob(pattern):
                try:
                    st = path.stat()
                except OSError:
                    continue
                found[(st.st_dev, st.st_ino)] = (st.st_mtime, path.name, path, st.st_size)
        # oldest first, so that an index evicting the oldest entries evicts old requests
        return [(k, path, size) for k, (_, _, path, size) in sorted(found.items(), key=lambda kv: kv[1][:2])]

    def lines(self) -> Iterator[bytes]:
        files = self._files()
        alive = {k for k, _, _ in files}
        for k in [k for k in self._offsets if k not in alive]:
            del self._offsets[k]  # deleted (the older rotation was replaced)
        for key, path, size in files:
            offset = self._offsets.get(key, 0)
            if size < offset:
                offset = 0  # truncated, or a new file on a reused inode
            if size == offset:
                self._offsets[key] = offset
                continue
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(size - offset)
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
            self._offsets[key] = offset + end
            yield from data[:end].splitlines()


class RequestIndex:
    """The newest ``size`` request ids of every worker's journal, read incrementally."""

    def __init__(self, state_dir: str | Path, size: int) -> None:
        self.size = size
        self._tail = Tail(directory(state_dir), ("*.jsonl.1", "*.jsonl"))
        self._entries: OrderedDict[str, Served] = OrderedDict()

    def catch_up(self) -> int:
        """Read what the journals gained since the last call; the number of rows added."""
        added = 0
        entries = self._entries
        for line in self._tail.lines():
            try:
                rid, version, ts, score, prediction, classes, segment = json.loads(line)
                served = Served(int(version), float(ts), None if score is None else float(score), prediction,
                                classes if isinstance(classes, list) else None, segment)
            except (ValueError, TypeError):
                continue  # a damaged line names nothing a label could join
            rid = str(rid)
            if rid in entries:
                served = AMBIGUOUS  # served twice: which row a label means is unknowable
                entries.move_to_end(rid)
            entries[rid] = served
            added += 1
        while len(entries) > self.size:
            entries.popitem(last=False)
        return added

    def get(self, request_id: str) -> Served | None:
        return self._entries.get(request_id)

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["Served", "AMBIGUOUS", "RequestJournal", "RequestIndex", "Tail", "directory", "segment_value", "prune",
           "DEFAULT_MAX_BYTES"]
