"""Load YAML safely and remember where every value came from.

Config errors must name ``file:line path``, so loading keeps a map from each value's
path (a tuple of keys and indexes) to its 1-based line. Only plain YAML is accepted: no
tags, no anchors or aliases (they enable billion-laughs inputs and hide values), no
duplicate keys, and files over :data:`MAX_BYTES` are refused before parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from promotion.errors import ConfigError

MAX_BYTES = 1 << 20
_STANDARD_TAGS = {
    "tag:yaml.org,2002:" + t
    for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}


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
    path = Path(path)
    name = display or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"{name}:1 (document): file is {size} bytes; the limit is {MAX_BYTES}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}:1 (document): file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}:1 (document): not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{name}:1 (document): cannot read ({exc.strerror})") from None
    return loads(text, name)


def loads(text: str, name: str = "<string>") -> Located:
    """Parse YAML text; see :func:`load`."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ConfigError(f"{name}:1 (document): larger than {MAX_BYTES} bytes")
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{name}:{line} (document): invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}:1 (document): invalid YAML: {exc}") from None
    if len(nodes) > 1:
        raise ConfigError(f"{name}:{nodes[1].start_mark.line + 1} (document): expected one YAML document, found {len(nodes)}")
    located = Located(data=None, file=name)
    if not nodes or nodes[0] is None:
        located.data = None
        return located
    located.data = _Builder(located).build(nodes[0], ())
    return located


class _Builder:
    def __init__(self, located: Located) -> None:
        self.located = located
        self.seen: set[int] = set()
        self.constructor = SafeConstructor()

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
                key = str(self.constructor.construct_object(key_node))
                if key in out:
                    self.fail(key_node, path + (key,), "duplicate key")
                out[key] = self.build(value_node, path + (key,))
                # a key's own line is more useful than its value's for block values
                self.located.lines[path + (key,)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as exc:
            self.fail(node, path, f"invalid value: {exc}")
