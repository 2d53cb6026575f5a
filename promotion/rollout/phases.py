"""The phases of a rollout, persisted between ticks."""

from __future__ import annotations

from enum import Enum


class Phase(str, Enum):
    PENDING = "pending"
    """Planned; no traffic has moved yet."""
    SHADOW = "shadow"
    """The canary receives mirrored traffic only; responses still come from the champion."""
    PROGRESSING = "progressing"
    """The canary serves its step's share of traffic and is being analysed."""
    PROMOTING = "promoting"
    """Every step passed; moving the alias, writing and committing the record."""
    PROBATION = "probation"
    """Promoted (alias moved, record committed); still watched at 100% for the policy's
    ``rollout.probation.duration_s``, the previous champion loaded for an instant rollback."""
    PROMOTED = "promoted"
    """The canary is the new champion; the record is committed."""
    ROLLING_BACK = "rolling_back"
    """Traffic is back on the champion; restoring the alias, reverting, recording."""
    ROLLED_BACK = "rolled_back"
    """The champion serves everything; the revert and the rollback record are committed."""
    ABORTED = "aborted"
    """Stopped by an operator's rollback, which owns traffic and records from then on."""

    @property
    def completed(self) -> bool:
        """True when no further tick will change anything."""
        return self in (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED)
