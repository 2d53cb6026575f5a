"""Delivery off the critical path: one background worker per sink, joined with a deadline.

A rollout calls the notifier from inside its controller (a rollback is decided, then
traffic moves): the call only queues the message, so a dead or hanging sink never holds
up a traffic action. Each sink's worker sends its messages in order with
:func:`~promotion.notify.base.deliver` (3 tries within 5 s); after a message fails, the
sink is treated as down for the rest of the run, so a dead sink costs at most one bounded
retry, not one per event. :meth:`Notifier.close` waits for the workers up to a deadline,
then reports every undelivered message as one line on stderr and in the job summary.

Usage::

    notifier = Notifier.from_policy(policy)        # sinks of the policy's notify: block
    notifier.send(message)                         # returns at once
    notifier.close()                               # at the end of the command
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Callable

from promotion.notify.base import Message, SinkSettings, SinkUnavailable, deliver, redact, secret_values

BUDGET_S = 5.0   # per message and sink, retries included
ATTEMPTS = 3


class Outbox:
    """A daemon thread running queued jobs in order; ``close`` waits at most until a deadline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"outbox-{name}", daemon=True)
        self._started = False
        self.pending = 0
        self._lock = threading.Lock()

    def put(self, job: Callable[[], None]) -> None:
        with self._lock:
            self.pending += 1
            if not self._started:
                self._thread.start()
                self._started = True
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # noqa: BLE001 - a job reports its own failures; the worker must live on
                pass
            with self._lock:
                self.pending -= 1

    def close(self, deadline: float) -> int:
        """Stop after the queued jobs or at ``deadline`` (monotonic); the jobs left undone."""
        if not self._started:
            return 0
        self._jobs.put(None)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return self.pending if self._thread.is_alive() else 0


def _sink_for(settings: SinkSettings):
    from promotion.notify import SINKS

    return SINKS[settings.kind](settings)


class Notifier:
    """Sends each message to the sinks subscribed to its event, in the background."""

    def __init__(self, sinks: list, *, budget_s: float = BUDGET_S, attempts: int = ATTEMPTS,
                 summary: Callable[[str], None] | None = None, err=None) -> None:
        self.sinks = sinks
        self.budget_s, self.attempts = budget_s, attempts
        self.failures: list[str] = []
        self.delivered: list[tuple[str, str]] = []  # (sink name, event)
        self._down: dict[str, str] = {}
        self._boxes = {s.settings.name: Outbox(s.settings.name) for s in sinks}
        self._lock = threading.Lock()
        self._summary = summary
        self._err = err
        self._closed = False

    @classmethod
    def from_policy(cls, policy, **kw) -> "Notifier":
        """A notifier for the policy's ``notify:`` sinks (none: a notifier that sends nothing)."""
        return cls([_sink_for(s) for s in getattr(policy, "notify", ()) or ()], **kw)

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def send(self, message: Message) -> None:
        """Queue ``message`` for every sink that hears its event; never blocks, never raises."""
        for sink in self.sinks:
            if message.event in sink.settings.events:
                self._boxes[sink.settings.name].put(lambda s=sink: self._deliver(s, message))

    def _fail(self, sink, message: Message, why: str) -> None:
        with self._lock:
            self.failures.append(redact(f"notification {message.event} to {sink.settings.name} not delivered: {why}",
                                        secret_values()))

    def _deliver(self, sink, message: Message) -> None:
        name = sink.settings.name
        if name in self._down:
            self._fail(sink, message, f"skipped, the sink failed earlier in this run ({self._down[name]})")
            return
        try:
            url, body, headers = sink.request(message)
        except SinkUnavailable as exc:
            self._down[name] = str(exc)
            self._fail(sink, message, str(exc))
            return
        outcome = deliver(url, body, headers, budget_s=self.budget_s, attempts=self.attempts)
        if outcome.ok:
            with self._lock:
                self.delivered.append((name, message.event))
            return
        why = f"{outcome.error} ({outcome.attempts} attempt{'s' * (outcome.attempts != 1)} in {outcome.seconds:.1f} s)"
        self._down[name] = outcome.error
        self._fail(sink, message, why)

    def close(self, wait_s: float | None = None) -> list[str]:
        """Wait for queued messages (at most ``wait_s``, default one delivery budget), then
        report what was not delivered: one line each on stderr and in the job summary."""
        if self._closed:
            return self.failures
        self._closed = True
        deadline = time.monotonic() + (self.budget_s + 0.5 if wait_s is None else wait_s)
        for name, box in self._boxes.items():
            left = box.close(deadline)
            if left:
                with self._lock:
                    self.failures.append(f"notification to {name}: {left} message(s) still being sent when the "
                                         "run ended; not delivered")
        self.report()
        return self.failures

    def report(self) -> None:
        if not self.failures:
            return
        err = self._err or sys.stderr
        for line in self.failures:
            print(f"warning: {line}", file=err)
        summary = self._summary
        if summary is None:
            from promotion.commands._common import append_step_summary as summary
        summary("### Notifications not delivered\n\n" + "\n".join(f"- {line}" for line in self.failures))
