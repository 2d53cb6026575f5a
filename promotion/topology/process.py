"""One started server: its ``Popen``, its log, and how to wait for it and stop it.

::

    proc = Proc("prometheus", popen("prometheus", cmd, log_path, env), log_path)
    wait_ready(proc, lambda: requests.get(url + "/-/ready", timeout=1).ok, timeout_s=30)
    ...
    stop(proc)      # its stop signal, a grace period, then SIGKILL; by PID only
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from promotion.errors import ServiceError

T = TypeVar("T")
# How every server this package starts says that its port was taken: Envoy, PostgreSQL,
# Prometheus (Go's net package), uvicorn and gunicorn in mlflow server; weed mini checks
# its ports before binding them ("Port allocation failed: port N ... is not available")
PORT_TAKEN = re.compile(r"address already in use|port allocation failed", re.IGNORECASE)
PORT_ATTEMPTS = 3


class StartError(ServiceError):
    """A server did not start; the message carries the tail of its log."""


class PortTaken(StartError):
    """A server could not bind a port that was free when it was picked: another process
    bound it in between. :func:`retry_port_taken` starts the server again on new ports."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


@dataclass
class Proc:
    """One process this package started, with its log."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    stop_signal: int = signal.SIGTERM
    grace_s: float = 5.0
    group: bool = False  # stop its whole process group (a server with workers)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 30) -> str:
        """The last ``lines`` of its log (empty when there is none yet)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Raise :class:`StartError` (with the log's tail) if it has exited."""
        if self.popen.poll() is not None:
            raise StartError(f"{self.name} exited with code {self.popen.returncode}:\n{self.tail()}")

    def stop(self) -> None:
        stop(self)


def popen(name: str, cmd: list[str], log_path: Path, env: dict[str, str], **kw) -> subprocess.Popen:
    """Start ``cmd`` (no shell) with stdout and stderr appended to ``log_path``."""
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **kw)
    except OSError as exc:
        raise StartError(f"{name}: cannot start {cmd[0]}: {exc}") from exc
    finally:
        log.close()  # the child holds its own copy


def stop(proc: Proc) -> None:
    """Stop exactly ``proc`` (its group when it leads one): its stop signal, a grace period,
    then SIGKILL."""
    p = proc.popen
    if p.poll() is None:
        try:
            os.killpg(p.pid, proc.stop_signal) if proc.group else p.send_signal(proc.stop_signal)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=proc.grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
    if proc.group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)  # workers left in the server's group


def port_taken(proc: Proc) -> bool:
    """Whether ``proc``'s log says one of its ports was taken (its log is its own: a
    launcher moves the log of an attempt aside before the next one)."""
    return bool(PORT_TAKEN.search(proc.tail(200)))


def wait_ready(proc: Proc, ready: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> None:
    """Wait until ``ready()`` is true; :class:`StartError` if the process exits or time runs out,
    :class:`PortTaken` if its log says a port it was given is taken (at once, even while
    it still runs: a server with several listeners may keep running without one).
    ``ready`` may raise while the server is not answering yet."""
    deadline = time.monotonic() + timeout_s
    next_log_check = 0.0
    while time.monotonic() < deadline:
        exited = proc.popen.poll() is not None
        if (exited or time.monotonic() >= next_log_check) and port_taken(proc):
            raise PortTaken(f"{proc.name}: a port it was given is taken by another process:\n{proc.tail()}",
                            proc.log_path)
        next_log_check = time.monotonic() + 0.5
        proc.check_alive()
        try:
            if ready():
                return
        except Exception:  # not answering yet
            pass
        time.sleep(poll_s)
    raise StartError(f"{proc.name} not up after {timeout_s:.0f}s:\n{proc.tail()}")


def retry_port_taken(launch: Callable[[], T], attempts: int = PORT_ATTEMPTS) -> T:
    """``launch()`` (which picks its ports itself), again when it raises :class:`PortTaken`,
    up to ``attempts`` times in all. A free port can only be *picked*; another process may
    bind it before the server does. The log of a failed attempt is kept beside the next
    one's as ``<log>.port-taken-<n>``; any other failure is raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return launch()
        except PortTaken as exc:
            if attempt == attempts:
                raise StartError(f"{exc.message}\n(ports taken on {attempts} attempts in a row)") from exc
            if exc.log_path is not None and exc.log_path.exists():
                exc.log_path.replace(exc.log_path.with_name(f"{exc.log_path.name}.port-taken-{attempt}"))
    raise AssertionError("unreachable")
