"""Staged rollout: deploy the canary, analyse, advance or roll back, one tick at a time.

Usage::

    from promotion.config import Project
    from promotion.rollout import Context, run
    final = run(Context.build(Project.discover(), "prod"))
    print(final.phase, final.record_path)

See :mod:`promotion.rollout.controller` for the tick and :mod:`promotion.rollout.phases`
for the states it moves through.
"""

from promotion.rollout.controller import Context, plan, run, start, tick
from promotion.rollout.phases import Phase
from promotion.rollout.state import RolloutState, StateStore

__all__ = ["Context", "Phase", "RolloutState", "StateStore", "plan", "run", "start", "tick"]
