"""README "Use your own model", run as written: its bash blocks in one shell, its python
block saved under the file name its first line gives, in a fresh folder, against the real
embedded MLflow store and a real ``bentoml serve`` started by ``promotion serve``.

The only thing added to the README's text is ``set -euo pipefail`` (a step that fails
stops the run) and the package's ``bin/`` on ``PATH``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Use your own model"
DEV_PORT = 3010  # environments/dev.yaml as `promotion init` writes it


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the section, in order."""
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end != -1 else None]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w+)\n(.*?)```", section, re.S)]


def script() -> str:
    """The section as one bash script: python blocks become the files they name."""
    lines = ["set -euo pipefail"]
    for lang, code in readme_blocks():
        if lang == "bash":
            lines.append(code)
        elif lang == "python":
            name = code.splitlines()[0].lstrip("# ").split()[0]
            assert re.fullmatch(r"[\w.-]+\.py", name), f"a python block must start with '# <file>.py': {name!r}"
            lines.append(f"cat > {name} <<'README_PY_EOF'\n{code}README_PY_EOF")
        else:
            pytest.fail(f"README section has a {lang!r} block the test does not know how to run")
    return "\n".join(lines) + "\n"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _Descendants:
    """Every process the script starts (remembered while it runs: orphans lose their parent)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.procs: dict[int, "psutil.Process"] = {}
        try:
            self.root = psutil.Process(pid)
        except psutil.Error:  # already gone: it started nothing that lives on
            self.root = None

    def remember(self) -> None:
        import psutil

        if self.root is None:
            return
        try:
            for child in self.root.children(recursive=True):
                self.procs.setdefault(child.pid, child)
        except psutil.Error:
            pass

    def follow(self, proc: subprocess.Popen, timeout_s: float) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while proc.poll() is None:
            self.remember()
            if time.monotonic() > deadline:
                raise AssertionError(f"the README steps did not finish within {timeout_s:.0f}s")
            time.sleep(0.5)

    def end(self, proc: subprocess.Popen) -> None:
        import psutil

        self.remember()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for child in self.procs.values():
            try:
                if child.is_running():  # is_running also checks the PID was not reused
                    child.kill()
            except psutil.Error:
                pass
        proc.wait(timeout=10)


def test_section_has_every_step():
    code = "\n".join(c for _, c in readme_blocks())
    for step in ("promotion init --model", "promotion.register(", "promotion validate", "promotion doctor dev",
                 "promotion gate dev", "promotion serve dev", "promotion rollout dev"):
        assert step in code, step
    assert "make_column_transformer((OneHotEncoder" in code  # a pipeline with a categorical column


def test_readme_own_model_runs_as_written(tmp_path):
    if not _port_free(DEV_PORT):
        pytest.skip(f"port {DEV_PORT} (the scaffold's dev endpoint) is in use on this machine")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROMOTION_", "MLFLOW_", "GITHUB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    log = tmp_path / "readme.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(["bash", "-c", script()], cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    seen = _Descendants(proc.pid)
    try:
        seen.follow(proc, timeout_s=540)
    finally:
        seen.end(proc)  # the router's workers run in sessions of their own: end them by PID
    out = log.read_text()
    root = tmp_path / "churn-promotion"
    serve_log = (root / "serve.log").read_text()[-3000:] if (root / "serve.log").exists() else ""
    assert proc.returncode == 0, out[-6000:] + "\n--- serve.log ---\n" + serve_log

    assert "ok: 3 environment file(s) and their policies are valid" in out
    assert "registered churn v1: recall" in out
    assert "nothing missing: every gate of policies/dev.yaml has what it reads" in out
    assert re.search(r"gate dev: churn v1 .*PASS", out)

    answer = json.loads(re.search(r'^\{"version".*\}', out, re.M).group(0))
    assert answer["version"] == 1 and answer["predictions"] == [1]

    from promotion.registry import Registry

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    state = root / ".promotion"
    old = os.environ.get("PROMOTION_STATE")
    os.environ["PROMOTION_STATE"] = str(state)
    try:
        registry = Registry(None, root)
        assert registry.alias("churn", "dev") == 1
        mv = registry.version("churn", 1)
    finally:
        if old is None:
            os.environ.pop("PROMOTION_STATE", None)
        else:
            os.environ["PROMOTION_STATE"] = old
    head = subprocess.run(["git", "log", "-1", "--format=%H", "--", "train.py"], cwd=root, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert mv.tags["code_commit"] == head
    records = sorted((root / "environments" / "records" / "dev").glob("*.json"))
    assert records, "the rollout committed no signed record"
    tracked = subprocess.run(["git", "ls-files", "environments/records/dev"], cwd=root, capture_output=True,
                             text=True, check=True).stdout
    assert tracked.strip()
