"""The one place where record bytes become Python objects (record files and signed payloads).

Kept on its own so a stricter loader (bounded nesting, integer size) replaces it in one
place. Every failure is an :class:`UnreadableRecord` naming the file: one line, exit 2.
"""

from __future__ import annotations

from typing import Any

from promotion._internal import safeload
from promotion.errors import VerificationError

MAX_RECORD_BYTES = 4 * 1024 * 1024  # a Sigstore bundle with a 100-entry timeline is ~60 KB


class UnreadableRecord(VerificationError):
    """A record that cannot be read or parsed at all: bad input rather than a bad signature."""

    exit_code = 2


def load_json(data: bytes, display: str, what: str = "not JSON (not a signed record)") -> Any:
    """Parse record JSON; raises :class:`UnreadableRecord` (``display: what``) on any failure."""
    if len(data) > MAX_RECORD_BYTES:
        raise UnreadableRecord(f"{display}: {len(data)} bytes is larger than a record can be "
                               f"({MAX_RECORD_BYTES} bytes)")
    try:
        return safeload.json_loads(data, limit=MAX_RECORD_BYTES)
    except safeload.Refused as exc:  # too deep, an integer beyond 64 bits, NaN or Infinity
        raise UnreadableRecord(f"{display}: {exc}") from None
    except (ValueError, UnicodeDecodeError):  # includes integers longer than Python converts
        raise UnreadableRecord(f"{display}: {what}") from None
