"""Bounded reading and JSON parsing of files a repository writer controls.

Environment and policy files, the trust file, records and GitHub event payloads are
all input an attacker with write access can shape. Each is read through
this module so that no such file can exhaust memory or the stack, or slip a value past a
check by being a number Python cannot compare:

=====================  =====================================================
:data:`MAX_BYTES`      a file larger than 1 MiB is refused before parsing
                       (a GitHub event payload: :data:`MAX_EVENT_BYTES`)
:data:`MAX_DEPTH`      a list/mapping nested deeper than 64 levels is refused
:data:`INT_MIN`,       an integer outside the signed 64-bit range is refused
:data:`INT_MAX`        (Python's own 4,300-digit limit is never reached)
non-finite numbers     ``NaN``, ``Infinity`` and ``1e999`` are refused: every
                       comparison with NaN is False, so a NaN threshold turns
                       a check off
=====================  =====================================================

Only regular files are read (not a directory, FIFO or device such as ``/dev/zero``).
YAML gets the same bounds in :mod:`promotion._internal.yamlio`, which uses
:func:`read_text`.

Usage::

    from promotion._internal import safeload
    text = safeload.read_text(path, "environments/trust.yaml")  # ConfigError naming the file
    doc = safeload.json_loads(payload)     # ValueError: Refused (a bound) or JSONDecodeError
    event = safeload.read_json(path, limit=safeload.MAX_EVENT_BYTES)  # OSError or ValueError

:func:`read_bytes` and :func:`read_text` raise :class:`~promotion.errors.ConfigError` as
``file:line (document): message``; :func:`json_loads`, :func:`read_limited` and
:func:`read_json` raise :class:`ValueError` / :class:`OSError`, so a caller that already
maps those to its own error (a record that "is not JSON") keeps doing so.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from promotion.errors import ConfigError

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
# GitHub caps webhook payloads at 25 MB; the runner's event file is one of them
MAX_EVENT_BYTES = 32 << 20
# longest integer literal parsed at all: 19 digits and a sign, or 0b and 64 binary digits
MAX_INT_CHARS = 70


class Refused(ValueError):
    """Input that is well-formed but outside a bound of this module."""


def _where(display: str, line: int = 1) -> str:
    return f"{display}:{line} (document)"


class NotReadable(OSError):
    """A path that is not a regular file within the size limit (an ``OSError``, like a missing file)."""


def read_limited(path: str | Path, *, limit: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file ``path``; :class:`OSError` if it is missing, not a file or too large.

    Opened before it is checked, so a path swapped for a FIFO or ``/dev/zero`` between a
    check and the read is still refused, and never read past ``limit``.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise NotReadable(errno.EISDIR, "is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise NotReadable(errno.EINVAL, "not a regular file")
        if info.st_size > limit:
            raise NotReadable(errno.EFBIG, f"file is {info.st_size} bytes; the limit is {limit}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while being read
        raise NotReadable(errno.EFBIG, f"file is over {limit} bytes; the limit is {limit}")
    return data


def read_bytes(path: str | Path, display: str | None = None, *, limit: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``); else :class:`ConfigError`."""
    name = display or str(path)
    try:
        return read_limited(path, limit=limit)
    except FileNotFoundError:
        raise ConfigError(f"{_where(name)}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{_where(name)}: is a directory, not a file") from None
    except NotReadable as exc:
        raise ConfigError(f"{_where(name)}: {exc.strerror}") from None
    except OSError as exc:
        raise ConfigError(f"{_where(name)}: cannot read ({exc.strerror})") from None


def decode(data: bytes, display: str) -> str:
    """``data`` as UTF-8 text; :class:`ConfigError` naming ``display`` (and the line) if it is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{_where(display, line)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_text(path: str | Path, display: str | None = None, *, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``; see :func:`read_bytes`."""
    name = display or str(path)
    return decode(read_bytes(path, name, limit=limit), name)


def _int(text: str) -> int:
    if len(text) > MAX_INT_CHARS:
        raise Refused(f"integer of {len(text)} digits is outside the 64-bit range")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise Refused(f"integer {text[:24]}{'...' if len(text) > 24 else ''} is outside the 64-bit range")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Refused(f"number {text[:24]} is not finite")
    return value


def _constant(name: str):
    raise Refused(f"{name} is not a number JSON allows")


def _depth_problem(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """Why ``value`` (parsed JSON/YAML) nests too deeply, or None. Iterative: no recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return f"nested deeper than {limit} levels"
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return None


def json_loads(data: bytes | str, *, limit: int = MAX_BYTES) -> Any:
    """Parse JSON within the bounds of this module; raises :class:`ValueError` otherwise.

    Bytes must be UTF-8. The message of a :class:`Refused` says which bound was hit.
    """
    if len(data) > limit:
        raise Refused(f"{len(data)} bytes; the limit is {limit}")
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        value = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        # the C scanner stops at the interpreter's recursion limit, far beyond MAX_DEPTH
        raise Refused(f"nested deeper than {MAX_DEPTH} levels") from None
    # a document with fewer brackets than the limit cannot nest deeper: skip the walk
    if data.count("[") + data.count("{") > MAX_DEPTH:
        problem = _depth_problem(value)
        if problem:
            raise Refused(problem)
    return value


def read_json(path: str | Path, *, limit: int = MAX_BYTES) -> Any:
    """Read and parse the JSON file ``path``; :class:`OSError` or :class:`ValueError` otherwise.

    For callers that already map those two to their own error (a GitHub event payload).
    """
    return json_loads(read_limited(path, limit=limit), limit=limit)
