"""A Prometheus of our own, scraping every replica each second.

Usage::

    prom = start_prometheus(["127.0.0.1:3101", "127.0.0.1:3102"], folder)   # job="fraud"
    PrometheusProvider(prom.url, selector='job="fraud"').snapshot()
    prom.stop()

Debian's ``prometheus`` binary (``make system-deps`` installs it), started by ``Popen`` of
the binary and stopped by that PID. A port another process took between picking it and
Prometheus binding it is picked again (:func:`~promotion.topology.process.retry_port_taken`).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from promotion.contract.launch import free_port
from promotion.topology.process import Proc, StartError, popen, retry_port_taken, stop, wait_ready

PROMETHEUS = "/usr/bin/prometheus"


@dataclass
class PrometheusProcess:
    """A running Prometheus; :attr:`url` is its HTTP API."""

    proc: subprocess.Popen
    url: str
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """End the Prometheus this started (by its PID)."""
        stop(Proc("prometheus", self.proc, self.log_path or Path(os.devnull), grace_s=10.0))


def start_prometheus(targets: list[str], folder: Path, *, job: str = "fraud",
                     binary: str = PROMETHEUS) -> PrometheusProcess:
    """Scrape every target (``host:port``) each second as ``job``; :class:`StartError` when the
    binary is missing or it does not come up."""
    import requests

    if not os.access(binary, os.X_OK):
        raise StartError(f"{binary} is not installed (make system-deps installs prometheus)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n"
                      f"  - job_name: {job}\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n")
    log_path = folder / "prometheus.log"

    def launch() -> PrometheusProcess:
        port = free_port()
        cmd = [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
               f"--web.listen-address=127.0.0.1:{port}"]
        proc = Proc("prometheus", popen("prometheus", cmd, log_path, dict(os.environ)), log_path, grace_s=10.0)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(proc, lambda: requests.get(url + "/-/ready", timeout=1).status_code == 200, 30.0, 0.2)
        except BaseException:
            stop(proc)
            raise
        return PrometheusProcess(proc.popen, url, log_path)

    return retry_port_taken(launch)
