"""Load YAML safely and remember where every value came from.

Config errors must name ``file:line path``, so loading keeps a map from each value's
path (a tuple of keys and indexes) to its 1-based line. Only plain YAML is accepted: no
tags, no aliases (they enable billion-laughs inputs and hide values; an alias is refused
where it appears, before anything is expanded), no duplicate keys. The bounds of
:mod:`promotion._internal.safeload` hold here too: a file over :data:`MAX_BYTES` is
refused before parsing, nesting deeper than :data:`MAX_DEPTH` or more than
:data:`MAX_NODES` values while parsing. An integer outside 64 bits or a non-finite
number (``.nan``, ``.inf``, ``1.0e+999``) is a ``file:line path`` problem; every such
number of a file is listed, not just the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from promotion._internal import safeload
from promotion.errors import ConfigError

MAX_BYTES = safeload.MAX_BYTES
MAX_DEPTH = safeload.MAX_DEPTH
# PyYAML is pure Python (~20 s for a 1 MiB flow list); a config file has a few hundred
# values, so parsing stops early at this many instead of tying up a gate run
MAX_NODES = 20_000
_STANDARD_TAGS = {
    "tag:yaml.org,2002:" + t
    for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _Refused(yaml.MarkedYAMLError):
    """A bound of this module, raised while composing (before any value is built)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses aliases, nesting deeper than :data:`MAX_DEPTH` and
    more than :data:`MAX_NODES` values.

    PyYAML composes recursively, so a few hundred ``[`` would otherwise end in a
    RecursionError; the bound is checked before descending.
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _Refused(problem="YAML anchors and aliases are not allowed", problem_mark=self.peek_event().start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(problem=f"more than {MAX_NODES} values", problem_mark=self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def _enter(self) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=self.peek_event().start_mark)

    def compose_sequence_node(self, anchor):
        self._enter()
        try:
            return super().compose_sequence_node(anchor)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor):
        self._enter()
        try:
            return super().compose_mapping_node(anchor)
        finally:
            self._depth -= 1


@dataclass
class Located:
    """A parsed document plus the line of every path in it."""

    data: Any
    file: str
    lines: dict[tuple, int] = field(default_factory=dict)

    def line_of(self, path: tuple | list) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def where(self, path: tuple | list) -> str:
        """``file:line path`` prefix for a message about ``path``."""
        return f"{self.file}:{self.line_of(path)} {dotted(path) or '(document)'}"


def dotted(path: tuple | list) -> str:
    """``("gates", "drift", "psi_max")`` -> ``gates.drift.psi_max``; indexes as ``[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def load(path: str | Path, display: str | None = None) -> Located:
    """Parse ``path``; raise :class:`ConfigError` naming file and line on any problem."""
    name = display or str(path)
    return loads(safeload.read_text(path, name, limit=MAX_BYTES), name)


def loads(text: str, name: str = "<string>") -> Located:
    """Parse YAML text; see :func:`load`."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ConfigError(f"{name}:1 (document): larger than {MAX_BYTES} bytes")
    try:
        nodes = list(yaml.compose_all(text, Loader=_BoundedLoader))
    except _Refused as exc:
        raise ConfigError(f"{name}:{exc.problem_mark.line + 1} (document): {exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{name}:{line} (document): invalid YAML: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:  # a control character or a stray byte
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else 1
        raise ConfigError(f"{name}:{line} (document): invalid YAML: character {exc.character!r}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{name}:1 (document): invalid YAML: {first}") from None
    if len(nodes) > 1:
        raise ConfigError(f"{name}:{nodes[1].start_mark.line + 1} (document): expected one YAML document, found {len(nodes)}")
    located = Located(data=None, file=name)
    if not nodes or nodes[0] is None:
        located.data = None
        return located
    builder = _Builder(located)
    located.data = builder.build(nodes[0], ())
    if builder.problems:
        raise ConfigError(builder.problems)
    return located


class _Builder:
    def __init__(self, located: Located) -> None:
        self.located = located
        self.seen: set[int] = set()
        self.constructor = SafeConstructor()
        self.problems: list[str] = []  # number problems: all are listed, then loading fails

    def fail(self, node, path, message: str):
        raise ConfigError(f"{self.located.file}:{node.start_mark.line + 1} {dotted(path) or '(document)'}: {message}")

    def build(self, node, path: tuple) -> Any:
        if id(node) in self.seen:
            self.fail(node, path, "YAML anchors and aliases are not allowed")
        self.seen.add(id(node))
        if node.tag not in _STANDARD_TAGS:
            self.fail(node, path, f"YAML tag {node.tag!r} is not allowed")
        self.located.lines[path] = node.start_mark.line + 1
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    self.fail(key_node, path, "mapping keys must be plain scalars")
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.fail(key_node, path, "YAML merge keys are not allowed")
                key = str(self.scalar(key_node, path))
                if key in out:
                    self.fail(key_node, path + (key,), "duplicate key")
                out[key] = self.build(value_node, path + (key,))
                # a key's own line is more useful than its value's for block values
                self.located.lines[path + (key,)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node, path: tuple) -> Any:
        where = f"{self.located.file}:{node.start_mark.line + 1} {dotted(path) or '(document)'}"
        if node.tag == _INT_TAG and len(node.value) > safeload.MAX_INT_CHARS:
            # int() of a long literal is slow (sexagesimal 1:2:3...) or raises past 4300 digits
            self.problems.append(f"{where}: integer of {len(node.value)} digits is outside the 64-bit range")
            return 0
        try:
            value = self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:  # e.g. a timestamp 2025-02-30
            problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            self.fail(node, path, f"invalid value: {problem}")
        if node.tag == _INT_TAG and not safeload.INT_MIN <= value <= safeload.INT_MAX:
            self.problems.append(f"{where}: integer {_short(node.value)} is outside the 64-bit range")
        elif node.tag == _FLOAT_TAG and not math.isfinite(value):
            # NaN compares False with everything: a NaN threshold would switch its check off
            self.problems.append(f"{where}: must be a finite number (got {_short(node.value)})")
        return value


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
