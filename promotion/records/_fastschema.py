"""Compile the subset of JSON Schema the predicate schema uses into plain closures.

Verifying a 10,000-record chain must take seconds, and generic ``jsonschema`` validation
costs about 2 ms per record. This compiles the same schema document into a checker that
answers valid/invalid only; on "invalid" the caller asks ``jsonschema`` for the message.
A keyword outside the supported subset raises at compile time, so the schema can never
silently gain a rule this checker ignores (tests compare both on valid and invalid input).
"""

from __future__ import annotations

import math
from typing import Any, Callable

Check = Callable[[Any], bool]
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer(),
    # NaN and infinities are not numbers here, as in promotion.config.schema_validator
    "number": lambda v: isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "$comment"}


def compile_schema(schema: dict) -> Check:
    root = schema
    return _compile(schema, root)


def _compile(node: Any, root: dict) -> Check:
    if node is True:
        return lambda v: True
    if node is False:
        return lambda v: False
    checks: list[Check] = []
    for key, val in node.items():
        if key in _ANNOTATIONS:
            continue
        if key == "type":
            kinds = [_TYPES[k] for k in (val if isinstance(val, list) else [val])]
            checks.append(kinds[0] if len(kinds) == 1 else (lambda v, kinds=kinds: any(k(v) for k in kinds)))
        elif key == "enum":
            checks.append(lambda v, val=val: any(v == x and type(v) is type(x) for x in val))
        elif key == "required":
            checks.append(lambda v, val=val: not isinstance(v, dict) or all(k in v for k in val))
        elif key == "properties":
            props = tuple((k, _compile(s, root)) for k, s in val.items())

            def check_props(v, props=props):
                if isinstance(v, dict):
                    for k, c in props:
                        if k in v and not c(v[k]):
                            return False
                return True
            checks.append(check_props)
        elif key == "additionalProperties":
            if val is not False:
                raise ValueError("only additionalProperties: false is supported")
            allowed = frozenset(node.get("properties", {}))
            checks.append(lambda v, allowed=allowed: not isinstance(v, dict) or allowed.issuperset(v))
        elif key == "items":
            item = _compile(val, root)

            def check_items(v, item=item):
                if isinstance(v, list):
                    for x in v:
                        if not item(x):
                            return False
                return True
            checks.append(check_items)
        elif key == "pattern":
            from promotion.config import ecma_pattern  # a final $ is the end of the text, as in JSON Schema

            rx = ecma_pattern(val)
            checks.append(lambda v, rx=rx: not isinstance(v, str) or rx.search(v) is not None)
        elif key == "minLength":
            checks.append(lambda v, val=val: not isinstance(v, str) or len(v) >= val)
        elif key in ("minimum", "maximum"):
            op = (lambda a, b: a >= b) if key == "minimum" else (lambda a, b: a <= b)
            checks.append(lambda v, val=val, op=op: not _TYPES["number"](v) or op(v, val))
        elif key == "oneOf":
            subs = [_compile(s, root) for s in val]
            checks.append(lambda v, subs=subs: sum(1 for s in subs if s(v)) == 1)
        elif key == "$ref":
            if not val.startswith("#/$defs/"):
                raise ValueError(f"unsupported $ref {val}")
            target = root["$defs"][val[len("#/$defs/"):]]
            checks.append(_compile(target, root))
        else:
            raise ValueError(f"unsupported JSON Schema keyword {key!r}")
    if len(checks) == 1:
        return checks[0]
    checks_t = tuple(checks)

    def check_all(v):
        for c in checks_t:
            if not c(v):
                return False
        return True
    return check_all
