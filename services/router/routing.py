"""Routing state on disk and how a request picks a version: shared by every worker through one file.

The document itself (:class:`~promotion.contract.routing.Routing`, its validation and the
sticky bucket of a routing key) is the contract's; this module persists it and turns it
into a lookup table::

    from services.router import routing
    state = routing.parse_request({"routes": {"1": 95, "2": 5},
                                   "digests": {"1": "sha256:…", "2": "sha256:…"}}, model="fraud-detector")
    saved = routing.commit(state_dir, state)            # next generation, written atomically
    table = routing.RouteTable(saved.routes)
    version = table.pick(routing.bucket("customer-42"))  # sticky for a given weight

Stickiness: a routing key hashes to a bucket in [0, 100). Versions own consecutive bucket
ranges, newest version first, so raising the newest version's weight from 5 to 25 only
moves keys from [5, 25) onto it; keys already on it stay. For two versions any fixed
order has that property, which also covers rollbacks (an older version as the canary).

Generations only increase. ``routing.json`` holds the current one, and every commit first
records it in ``routing.generation`` (a side file), so a ``routing.json`` that is later
corrupted, truncated or deleted by hand does not restart the count: the next commit
continues from the highest of the two files and of the generation a caller knows to be
applied (the workers'). A worker that already applies generation N ignores any state
numbered N or lower, so a count that restarted would leave traffic where it was.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from promotion.contract.routing import (BUCKETS, DIGEST_RE, MAX_GENERATION, WEIGHT_TOLERANCE,  # noqa: F401
                                        Routing, RoutingInputError, Shadow, based_on, bucket, parse_generation,
                                        parse_request)

RoutingState = Routing  # the name the service's code and tests have used
ROUTING_FILE = "routing.json"
GENERATION_FILE = "routing.generation"
LOCK_FILE = "routing.lock"
REFUSED_FILE = "refused.json"
MAX_FILE_BYTES = 1 << 20  # a routing file is a few hundred bytes; anything this big is not one


class RoutingFileError(ValueError):
    """A routing file on disk that cannot be read or parsed; the message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class StaleGeneration(Exception):
    """A write based on an older generation than the current one (HTTP 409)."""

    def __init__(self, current: int, based_on: int) -> None:
        super().__init__(f"routing changed since generation {based_on}: it is at generation {current} now; "
                         f"read it again before changing it")
        self.current = current
        self.based_on = based_on


def random_bucket() -> float:
    return random.random() * 100.0


class RouteTable:
    """Weights turned into consecutive bucket ranges, newest version first."""

    __slots__ = ("bounds", "versions")

    def __init__(self, routes: dict[int, float]) -> None:
        self.bounds: list[float] = []
        self.versions: list[int] = []
        upper = 0.0
        for version in sorted(routes, reverse=True):
            if routes[version] <= 0.0:
                continue
            upper += routes[version]
            self.bounds.append(upper)
            self.versions.append(version)
        if not self.versions:
            raise RoutingInputError("routes: no version has a positive weight")
        self.bounds[-1] = math.inf  # rounding never leaves a bucket unowned

    def pick(self, b: float) -> int:
        for upper, version in zip(self.bounds, self.versions):
            if b < upper:
                return version
        return self.versions[-1]  # unreachable: the last bound is +inf


# -- persistence ---------------------------------------------------------------------

def routing_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / ROUTING_FILE


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """Write ``data`` so readers see the old file or the new one, never half of either.

    ``durable`` also fsyncs, so the write survives a power cut (routing state); heartbeats skip it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def locked(state_dir: str | Path) -> Iterator[None]:
    """Serialise read-modify-write of the routing state across worker processes."""
    path = Path(state_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def signature(path: Path) -> tuple[int, int, int] | None:
    """A cheap change marker of the routing file (one stat): mtime, inode, size."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def _read_json(path: Path) -> Any:
    """A small JSON file's content; FileNotFoundError if absent, RoutingFileError if unreadable."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RoutingFileError(path, f"cannot be read ({exc.strerror or exc.__class__.__name__})") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise RoutingFileError(path, f"is larger than {MAX_FILE_BYTES} bytes")
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise RoutingFileError(path, "is not valid JSON (nested too deeply)") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RoutingFileError(path, f"is not valid JSON ({exc})") from exc


def load(state_dir: str | Path) -> Routing | None:
    """The persisted state, or None when there is none yet; RoutingFileError if unreadable."""
    path = routing_path(state_dir)
    try:
        data = _read_json(path)
    except FileNotFoundError:
        return None
    try:
        return Routing.from_json(data)
    except RoutingInputError as exc:
        raise RoutingFileError(path, f"is not a routing state ({exc})") from exc


def generation_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / GENERATION_FILE


def last_generation(state_dir: str | Path) -> int | None:
    """The highest generation ever committed, from the side file; None when absent."""
    path = generation_path(state_dir)
    try:
        data = _read_json(path)
    except FileNotFoundError:
        return None
    try:
        return parse_generation(data.get("generation") if isinstance(data, dict) else None)
    except RoutingInputError as exc:
        raise RoutingFileError(path, f"is not a generation record ({exc})") from exc


def commit(state_dir: str | Path, state: Routing, if_absent: bool = False,
           floor: int | Callable[[], int] = 0, base: int | None = None) -> Routing | None:
    """Persist ``state`` as the next generation and return what was written.

    The next generation is one more than the highest of: ``routing.json``'s, the side
    file's, ``floor`` (a generation the caller knows is applied; a callable is asked only
    when ``routing.json`` is missing or unreadable, the one case it can matter) and
    ``base``. An unreadable ``routing.json`` is replaced (that is how an operator repairs
    it); when neither file nor ``floor`` tells the last generation, RoutingFileError
    instead, since restarting the count would leave every worker on its routing. ``base``
    is the generation the change was computed from: older than the current one raises
    StaleGeneration. With ``if_absent``, writes only when no ``routing.json`` exists at
    all (returns None otherwise).
    """
    with locked(state_dir):
        try:
            current, broken = load(state_dir), None
        except RoutingFileError as exc:
            current, broken = None, exc
        if if_absent and (current is not None or broken is not None):
            return None
        try:
            recorded, side_broken = last_generation(state_dir), None
        except RoutingFileError as exc:
            recorded, side_broken = None, exc
        if callable(floor):
            floor = floor() if current is None else 0
        if broken is not None and recorded is None and floor <= 0:
            why = str(side_broken) if side_broken is not None else f"{generation_path(state_dir)}: is missing"
            raise RoutingFileError(broken.path, f"{broken.reason}; and the last generation is unknown ({why}): "
                                   "restore the file, or remove it and restart the service")
        known = max(current.generation if current else 0, recorded or 0, floor)
        if base is not None and base < known:
            raise StaleGeneration(known, base)
        generation = max(known, base or 0) + 1
        if generation > MAX_GENERATION:
            raise RoutingFileError(routing_path(state_dir), f"generation {generation} is past {MAX_GENERATION}")
        new = Routing(generation=generation, model=state.model, routes=dict(state.routes),
                           digests=dict(state.digests), shadow=state.shadow, updated_at=time.time())
        # the side file first: a crash between the two writes leaves it ahead, never behind
        # (not fsynced: it matters only once routing.json is broken by hand, not by a power cut,
        # which the fsynced routing.json survives)
        write_json_atomic(generation_path(state_dir), {"generation": generation}, durable=False)
        write_json_atomic(routing_path(state_dir), new.to_json())
        return new


# -- refusals (shared so that GET on any worker reports them) --------------------------

def load_refused(state_dir: str | Path) -> dict[str, str]:
    """Refused versions and why (``{}`` when none, or when the file is unreadable)."""
    try:
        data = _read_json(Path(state_dir) / REFUSED_FILE)
    except (FileNotFoundError, RoutingFileError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def record_refused(state_dir: str | Path, refused: dict[int, str], accepted: dict[int, str] | None = None) -> None:
    """Add refusals and clear versions that have since been verified."""
    with locked(state_dir):
        current = load_refused(state_dir)
        for v in accepted or {}:
            current.pop(str(v), None)
        current.update({str(v): reason for v, reason in refused.items()})
        write_json_atomic(Path(state_dir) / REFUSED_FILE, current, durable=False)
