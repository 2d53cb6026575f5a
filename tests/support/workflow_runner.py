"""Run a GitHub Actions workflow's ``run:`` steps here, the way the hosted runner would.

Usage::

    runner = WorkflowRunner(".github/workflows/gates.yml", repo=git_repo, workdir=tmp_path,
                            api_url=fake.url, secrets={"MLFLOW_TRACKING_TOKEN": "t"})
    run = runner.run("pull_request", pull_request_payload(...), sha=merge_sha,
                     ref="refs/pull/7/merge")
    assert run.jobs["gates"].conclusion == "success"
    print(run.jobs["gate (prod)"].summary)

What is faithful: each ``run:`` is a script executed with ``bash -e`` in the job's
workspace; the environment is the runner's contract (``GITHUB_EVENT_NAME``,
``GITHUB_EVENT_PATH`` holding the webhook payload, ``GITHUB_OUTPUT``, ``GITHUB_ENV``,
``GITHUB_PATH``, ``GITHUB_STEP_SUMMARY``, ``GITHUB_SHA``, ``GITHUB_REF``,
``GITHUB_REPOSITORY``, ``RUNNER_TEMP``, ``GITHUB_API_URL``...) merged with the workflow's,
the job's and the step's ``env:``; ``${{ }}`` expressions are evaluated (the subset the
workflows use: contexts ``github``, ``inputs``, ``secrets``, ``vars``, ``env``,
``matrix``, ``needs``, ``steps``; literals; ``== != && || !``; ``fromJSON``, ``toJSON``,
``format``, ``always``, ``success``, ``failure``, ``cancelled``); ``if:`` on jobs and
steps; ``needs`` ordering, job outputs and matrices.

What is simulated: ``actions/checkout`` clones ``repo`` at ``with.ref`` (default the
event's sha) into ``with.path``; ``actions/setup-python`` does nothing (this interpreter
is the Python); ``actions/create-github-app-token`` fails, as the action does, without an
app id (``client-id`` or ``app-id``) or ``private-key``, and otherwise outputs the test's
``app_token`` as ``token``. ``on_checkout`` lets a test prepare a checkout, e.g. with
:func:`install_venv_shim` so that ``make install`` finds the package already installed.
Any other action raises, so a new action cannot slip past the tests unsimulated.

What is substituted, only when a test asks: ``force_env`` is applied after the workflow's,
job's and step's ``env:``, for what cannot run here at all - e.g.
``{"PROMOTION_SIGNER": "local"}``, because keyless Sigstore signing needs GitHub's OIDC
token and the internet. ``base_env`` by contrast is the runner's environment, which the
workflow's ``env:`` overrides as on GitHub.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

# -- expressions ---------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^']|'')*') |
    (?P<num>-?\d+(?:\.\d+)?) |
    (?P<op>==|!=|&&|\|\||!|\(|\)|,|\[|\]|\.|\*) |
    (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
)""", re.VERBOSE)


class ExpressionError(Exception):
    pass


def _tokens(text: str) -> list[tuple[str, Any]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"cannot parse expression at {text[pos:]!r}")
        pos = m.end()
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "str":
            value = value[1:-1].replace("''", "'")
        elif kind == "num":
            value = float(value) if "." in value else int(value)
        out.append((kind, value))
    return out


def _truthy(v: Any) -> bool:
    return v not in (None, False, 0, "", 0.0)


def _loose_eq(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()  # GitHub compares strings case-insensitively
    return a == b


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


class _Parser:
    def __init__(self, text: str, contexts: dict[str, Any], status: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.ctx = contexts
        self.status = status  # "success" | "failure" | "cancelled"

    def peek(self, value=None):
        if self.i < len(self.toks):
            kind, v = self.toks[self.i]
            if value is None or (kind == "op" and v == value):
                return self.toks[self.i]
        return None

    def take(self, value=None):
        tok = self.peek(value)
        if tok is None:
            raise ExpressionError(f"expected {value!r} in expression")
        self.i += 1
        return tok

    def parse(self) -> Any:
        value = self.or_()
        if self.i != len(self.toks):
            raise ExpressionError(f"trailing tokens: {self.toks[self.i:]}")
        return value

    def or_(self):
        left = self.and_()
        while self.peek("||"):
            self.take()
            right = self.and_()
            left = left if _truthy(left) else right
        return left

    def and_(self):
        left = self.cmp()
        while self.peek("&&"):
            self.take()
            right = self.cmp()
            left = right if _truthy(left) else left
        return left

    def cmp(self):
        left = self.unary()
        while self.peek("==") or self.peek("!="):
            op = self.take()[1]
            right = self.unary()
            left = _loose_eq(left, right) if op == "==" else not _loose_eq(left, right)
        return left

    def unary(self):
        if self.peek("!"):
            self.take()
            return not _truthy(self.unary())
        return self.postfix()

    def postfix(self):
        value = self.primary()
        while True:
            if self.peek("."):
                self.take()
                kind, name = self.take()
                value = value.get(name) if isinstance(value, dict) else None
            elif self.peek("["):
                self.take()
                key = self.or_()
                self.take("]")
                if isinstance(value, dict):
                    value = value.get(key)
                elif isinstance(value, list) and isinstance(key, int) and key < len(value):
                    value = value[key]
                else:
                    value = None
            else:
                return value

    def primary(self):
        kind, value = self.take()
        if kind in ("str", "num"):
            return value
        if kind == "op" and value == "(":
            inner = self.or_()
            self.take(")")
            return inner
        if kind != "name":
            raise ExpressionError(f"unexpected {value!r}")
        if value in ("true", "false"):
            return value == "true"
        if value == "null":
            return None
        if self.peek("("):
            self.take()
            args = []
            while not self.peek(")"):
                args.append(self.or_())
                if self.peek(","):
                    self.take()
            self.take(")")
            return self.call(value, args)
        if value not in self.ctx:
            raise ExpressionError(f"unknown context {value!r}")
        return self.ctx[value]

    def call(self, name: str, args: list) -> Any:
        fn = name.lower()
        if fn == "fromjson":
            return json.loads(args[0])
        if fn == "tojson":
            return json.dumps(args[0], indent=2)
        if fn == "format":
            out = args[0]
            for n, a in enumerate(args[1:]):
                out = out.replace("{%d}" % n, _fmt(a))
            return out
        if fn == "contains":
            hay, needle = args
            return needle in hay if isinstance(hay, (list, str)) else False
        if fn == "startswith":
            return str(args[0]).lower().startswith(str(args[1]).lower())
        if fn == "always":
            return True
        if fn == "success":
            return self.status == "success"
        if fn == "failure":
            return self.status == "failure"
        if fn == "cancelled":
            return self.status == "cancelled"
        raise ExpressionError(f"function {name}() is not supported by the harness")


def evaluate(expr: str, contexts: dict[str, Any], status: str = "success") -> Any:
    """Evaluate the inside of one ``${{ }}``."""
    return _Parser(expr, contexts, status).parse()


_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def render(value: Any, contexts: dict[str, Any], status: str = "success") -> Any:
    """A YAML value with its ``${{ }}`` expressions evaluated.

    A string that is exactly one expression keeps the expression's type (as GitHub does
    for ``matrix: ${{ fromJSON(...) }}``); otherwise results are interpolated as text.
    """
    if isinstance(value, dict):
        return {k: render(v, contexts, status) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, contexts, status) for v in value]
    if not isinstance(value, str):
        return value
    whole = _EXPR.fullmatch(value.strip())
    if whole:
        return evaluate(whole.group(1), contexts, status)
    return _EXPR.sub(lambda m: _fmt(evaluate(m.group(1), contexts, status)), value)


def condition(expr: Any, contexts: dict[str, Any], status: str) -> bool:
    """An ``if:``: implicit ``success() &&`` unless a status function is used."""
    if expr is None:
        return status == "success"
    if isinstance(expr, bool):
        return expr and status == "success"
    text = str(expr).strip()
    m = _EXPR.fullmatch(text)
    if m:
        text = m.group(1)
    if not re.search(r"\b(always|success|failure|cancelled)\s*\(", text):
        text = f"success() && ({text})"
    return _truthy(evaluate(text, contexts, status))


# -- results -------------------------------------------------------------------------

@dataclass
class StepResult:
    name: str
    outcome: str  # success | failure | skipped
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    command: str | None = None


@dataclass
class JobResult:
    job_id: str
    name: str
    conclusion: str  # success | failure | skipped
    steps: list[StepResult] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    matrix: dict[str, Any] = field(default_factory=dict)
    environment: str | None = None
    workspace: Path | None = None

    @property
    def output(self) -> str:
        """Everything the job's steps printed, in order."""
        return "".join(s.stdout + s.stderr for s in self.steps)

    def step(self, name: str) -> StepResult:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step {name!r} in job {self.name}: {[s.name for s in self.steps]}")


@dataclass
class WorkflowRun:
    jobs: dict[str, JobResult]  # by display name ("gate (prod)")

    def by_id(self, job_id: str) -> list[JobResult]:
        return [j for j in self.jobs.values() if j.job_id == job_id]


# -- the runner ----------------------------------------------------------------------

def _parse_env_file(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV syntax: ``k=v`` lines and ``k<<DELIM`` heredocs."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delim = line.split("<<", 1)
            body = []
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"unterminated heredoc {delim!r} for {key!r}")
            i += 1
            out[key] = "\n".join(body)
        elif "=" in line:
            key, val = line.split("=", 1)
            out[key] = val
        else:
            raise ValueError(f"invalid line in GITHUB_OUTPUT/GITHUB_ENV: {line!r}")
    return out


def install_venv_shim(checkout: Path, python: str = sys.executable) -> None:
    """Make ``make install`` a no-op in ``checkout`` and ``.venv/bin/*`` run its code here.

    ``.venv/bin/promotion`` runs this interpreter with the checkout first on
    ``PYTHONPATH``, so the code under test is the checkout's, with this environment's
    dependencies; the Makefile's install stamp is as new as ``pyproject.toml``.
    """
    bindir = checkout / ".venv" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name, args in (("python", ""), ("promotion", "-m promotion")):
        script = bindir / name
        script.write_text(
            "#!/bin/sh\n"
            f'PYTHONPATH="{checkout}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{python}" {args} "$@"\n')
        script.chmod(0o755)
    for tool in ("zizmor", "check-jsonschema"):
        found = shutil.which(tool) or str(Path(python).parent / tool)
        if Path(found).exists():
            (bindir / tool).unlink(missing_ok=True)
            (bindir / tool).symlink_to(found)
    stamp = checkout / ".venv" / ".installed"
    stamp.touch()
    pyproject = checkout / "pyproject.toml"
    # as new as pyproject.toml (make rebuilds only when a prerequisite is newer), and not
    # in the future, which make would warn about as clock skew
    base = pyproject.stat().st_mtime_ns if pyproject.exists() else time.time_ns()
    os.utime(stamp, ns=(base, base))


class WorkflowRunner:
    """Executes one workflow file's jobs for one event; see the module docstring."""

    def __init__(
        self,
        workflow: str | Path,
        *,
        repo: str | Path,
        workdir: str | Path,
        repository: str = "acme/models",
        api_url: str = "http://127.0.0.1:9",
        server_url: str = "https://github.com",
        token: str = "ghs_test_token",
        secrets: dict[str, str] | None = None,
        vars: dict[str, str] | None = None,
        base_env: dict[str, str] | None = None,
        force_env: dict[str, str] | None = None,
        on_checkout: Callable[[Path], None] | None = None,
        actor: str = "octocat",
        timeout: float = 600,
        app_token: str | None = None,
    ) -> None:
        self.path = Path(workflow)
        self.workflow = yaml.safe_load(self.path.read_text())
        # PyYAML reads the key `on` as True
        self.on = self.workflow.get("on", self.workflow.get(True))
        self.repo = Path(repo)
        self.workdir = Path(workdir)
        self.repository = repository
        self.api_url = api_url
        self.server_url = server_url
        self.token = token
        self.secrets = dict(secrets or {})
        self.vars = dict(vars or {})
        self.base_env = dict(base_env or {})
        self.force_env = dict(force_env or {})
        self.on_checkout = on_checkout
        self.actor = actor
        self.timeout = timeout
        self.app_token = app_token

    # -- public ------------------------------------------------------------------------

    def run(self, event_name: str, payload: dict, *, sha: str, ref: str,
            inputs: dict[str, Any] | None = None, jobs: list[str] | None = None) -> WorkflowRun:
        """Run every job (or those in ``jobs``) whose ``needs`` are met, in order."""
        if event_name not in self._triggers():
            raise ValueError(f"{self.path.name} is not triggered by {event_name!r} (on: {sorted(self._triggers())})")
        if event_name == "workflow_dispatch":
            inputs = self._dispatch_inputs(inputs or payload.get("inputs") or {})
        self._event = (event_name, payload, sha, ref, inputs or {})
        done: dict[str, list[JobResult]] = {}
        order = self._job_order()
        results: dict[str, JobResult] = {}
        for job_id in order:
            if jobs is not None and job_id not in jobs:
                continue
            for result in self._run_job(job_id, done):
                results[result.name] = result
                done.setdefault(job_id, []).append(result)
        return WorkflowRun(results)

    # -- internals ---------------------------------------------------------------------

    def _triggers(self) -> set[str]:
        on = self.on
        if isinstance(on, str):
            return {on}
        if isinstance(on, list):
            return set(on)
        return set(on or {})

    def _dispatch_inputs(self, given: dict[str, Any]) -> dict[str, Any]:
        spec = (self.on.get("workflow_dispatch") or {}).get("inputs") or {}
        out = {}
        for name, decl in spec.items():
            value = given.get(name, decl.get("default", ""))
            if decl.get("required") and value in ("", None):
                raise ValueError(f"input {name!r} is required")
            if decl.get("type") == "choice" and value not in decl.get("options", []):
                raise ValueError(f"input {name!r}: {value!r} is not one of {decl.get('options')}")
            out[name] = value
        unknown = set(given) - set(spec)
        if unknown:
            raise ValueError(f"unexpected inputs {sorted(unknown)}")
        return out

    def _job_order(self) -> list[str]:
        jobs = self.workflow["jobs"]
        order, seen = [], set()

        def visit(j):
            if j in seen:
                return
            seen.add(j)
            needs = jobs[j].get("needs") or []
            for n in [needs] if isinstance(needs, str) else needs:
                visit(n)
            order.append(j)

        for j in jobs:
            visit(j)
        return order

    def _github_context(self) -> dict[str, Any]:
        event_name, payload, sha, ref, _ = self._event
        ctx = {
            "event_name": event_name, "event": payload, "sha": sha, "ref": ref,
            "ref_name": ref.rsplit("/", 1)[-1] if ref.startswith("refs/heads/") else ref.split("/", 2)[-1],
            "repository": self.repository, "repository_owner": self.repository.split("/")[0],
            "actor": self.actor, "token": self.token, "api_url": self.api_url,
            "server_url": self.server_url, "workflow": self.workflow.get("name", self.path.stem),
            "run_id": "4242", "run_attempt": "1",
        }
        if event_name.startswith("pull_request"):
            pr = payload.get("pull_request", {})
            ctx["base_ref"] = pr.get("base", {}).get("ref", "")
            ctx["head_ref"] = pr.get("head", {}).get("ref", "")
        return ctx

    def _needs_context(self, job: dict, done: dict[str, list[JobResult]]) -> dict[str, Any]:
        needs = job.get("needs") or []
        ctx = {}
        for n in [needs] if isinstance(needs, str) else needs:
            runs = done.get(n, [])
            if not runs or all(r.conclusion == "skipped" for r in runs):
                result = "skipped"
            elif any(r.conclusion == "failure" for r in runs):
                result = "failure"
            else:
                result = "success"
            outputs: dict[str, str] = {}
            for r in runs:
                outputs.update(r.outputs)
            ctx[n] = {"result": result, "outputs": outputs}
        return ctx

    def _run_job(self, job_id: str, done: dict[str, list[JobResult]]) -> list[JobResult]:
        job = self.workflow["jobs"][job_id]
        event_name, payload, sha, ref, inputs = self._event
        needs = self._needs_context(job, done)
        status = "failure" if any(n["result"] == "failure" for n in needs.values()) else "success"
        if any(n["result"] == "skipped" for n in needs.values()) and status == "success":
            status = "skipped"  # a skipped dependency skips the job unless it says always()
        base_ctx = {"github": self._github_context(), "inputs": inputs, "secrets": self.secrets,
                    "vars": self.vars, "needs": needs, "env": {}, "matrix": {}, "steps": {},
                    "strategy": {}, "runner": {"os": "Linux", "temp": ""}}
        cond_status = "success" if status == "skipped" else status
        run_it = condition(job.get("if"), base_ctx, cond_status) if status != "skipped" else \
            (job.get("if") is not None and condition(job.get("if"), base_ctx, "success")
             and bool(re.search(r"\b(always|failure|cancelled)\s*\(", str(job.get("if")))))
        name_tmpl = job.get("name", job_id)
        if not run_it:
            return [JobResult(job_id, str(render(name_tmpl, {**base_ctx, "matrix": {}}) if "matrix" not in str(name_tmpl) else job_id), "skipped")]
        matrices = self._matrices(job, base_ctx)
        results = []
        for matrix in matrices:
            ctx = {**base_ctx, "matrix": matrix}
            name = str(render(name_tmpl, ctx))
            results.append(self._run_one(job_id, name, job, ctx))
        return results

    def _matrices(self, job: dict, ctx: dict) -> list[dict[str, Any]]:
        strategy = job.get("strategy") or {}
        matrix = render(strategy.get("matrix"), ctx) if strategy.get("matrix") is not None else None
        if not matrix:
            return [{}]
        if not isinstance(matrix, dict):
            raise ValueError(f"matrix must be a mapping, got {matrix!r}")
        axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
        if any(not isinstance(v, list) for v in axes.values()):
            raise ValueError(f"matrix axes must be lists: {axes!r}")
        combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())] if axes else []
        # GitHub's `include`: an entry extends every combination whose axis values it does not
        # overwrite, and becomes a combination of its own when it extends none
        include = matrix.get("include") or []
        if not isinstance(include, list) or any(not isinstance(e, dict) for e in include):
            raise ValueError(f"matrix include must be a list of mappings: {include!r}")
        for entry in include:
            extended = False
            for combo in combos[:len(combos)] if axes else ():
                if all(combo.get(k, v) == v for k, v in entry.items() if k in axes):
                    combo.update({k: v for k, v in entry.items() if k not in axes})
                    extended = True
            if not extended:
                combos.append(dict(entry))
        return combos or [{}]

    def _run_one(self, job_id: str, name: str, job: dict, ctx: dict) -> JobResult:
        event_name, payload, sha, ref, inputs = self._event
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        root = self.workdir / safe
        workspace, temp = root / "workspace", root / "temp"
        if root.exists():
            shutil.rmtree(root)
        workspace.mkdir(parents=True)
        temp.mkdir(parents=True)
        event_path = temp / "event.json"
        event_path.write_text(json.dumps(payload, indent=2))
        github = {**ctx["github"], "workspace": str(workspace), "job": job_id, "event_path": str(event_path)}
        ctx = {**ctx, "github": github, "runner": {"os": "Linux", "temp": str(temp)}}
        contract = {
            "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(event_path), "GITHUB_SHA": sha, "GITHUB_REF": ref,
            "GITHUB_REF_NAME": github["ref_name"], "GITHUB_REPOSITORY": self.repository,
            "GITHUB_REPOSITORY_OWNER": github["repository_owner"], "GITHUB_ACTOR": self.actor,
            "GITHUB_WORKSPACE": str(workspace), "GITHUB_API_URL": self.api_url,
            "GITHUB_SERVER_URL": self.server_url, "GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_JOB": job_id, "GITHUB_WORKFLOW": github["workflow"], "RUNNER_TEMP": str(temp),
            "RUNNER_OS": "Linux", "HOME": str(temp / "home"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
        }
        if "base_ref" in github:
            contract["GITHUB_BASE_REF"] = github["base_ref"]
            contract["GITHUB_HEAD_REF"] = github["head_ref"]
        (temp / "home").mkdir()
        contract.update(self.base_env)
        env_ctx: dict[str, str] = {}
        # GitHub evaluates workflow and job env before a runner is assigned: no `runner` context there
        no_runner = {k: v for k, v in ctx.items() if k != "runner"}
        for scope in (self.workflow.get("env"), job.get("env")):
            env_ctx.update({k: _fmt(v) for k, v in render(scope or {}, {**no_runner, "env": env_ctx}).items()})
        persisted: dict[str, str] = {}   # GITHUB_ENV across steps
        extra_path: list[str] = []       # GITHUB_PATH across steps
        steps_ctx: dict[str, dict] = {}
        result = JobResult(job_id, name, "success", matrix=ctx["matrix"], workspace=workspace,
                           environment=_fmt(render(job.get("environment"), ctx)) if job.get("environment") else None)
        status = "success"
        summary: list[str] = []
        for n, step in enumerate(job.get("steps") or []):
            sctx = {**ctx, "env": {**env_ctx, **persisted}, "steps": steps_ctx}
            label = step.get("name") or step.get("uses") or (step.get("run") or "").splitlines()[0]
            if not condition(step.get("if"), sctx, status):
                result.steps.append(StepResult(label, "skipped"))
                if step.get("id"):
                    steps_ctx[step["id"]] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
                continue
            step_env = {k: _fmt(v) for k, v in render(step.get("env") or {}, sctx).items()}
            if "uses" in step:
                sr = self._uses(step, sctx, workspace)
            else:
                files = {k: temp / f"{k.lower()}_{n}" for k in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV", "GITHUB_PATH")}
                for f in files.values():
                    f.write_text("")
                env = {**contract, **env_ctx, **persisted, **step_env, **self.force_env,
                       **{k: str(v) for k, v in files.items()}}
                if extra_path:
                    env["PATH"] = ":".join([*reversed(extra_path), env["PATH"]])
                script = temp / f"step_{n}.sh"
                script.write_text(step["run"])
                cwd = workspace / render(step.get("working-directory", "."), sctx)
                proc = subprocess.run(["bash", "-e", str(script)], cwd=cwd, env=env, capture_output=True,
                                      text=True, timeout=self.timeout)
                sr = StepResult(label, "success" if proc.returncode == 0 else "failure", proc.returncode,
                                proc.stdout, proc.stderr, _parse_env_file(files["GITHUB_OUTPUT"].read_text()),
                                command=step["run"])
                persisted.update(_parse_env_file(files["GITHUB_ENV"].read_text()))
                extra_path.extend(p for p in files["GITHUB_PATH"].read_text().splitlines() if p.strip())
                summary.append(files["GITHUB_STEP_SUMMARY"].read_text())
            result.steps.append(sr)
            if step.get("id"):
                steps_ctx[step["id"]] = {"outputs": sr.outputs, "outcome": sr.outcome, "conclusion": sr.outcome}
            if sr.outcome == "failure" and not step.get("continue-on-error"):
                status = "failure"
        result.conclusion = status
        result.summary = "".join(summary)
        final = {**ctx, "env": {**env_ctx, **persisted}, "steps": steps_ctx}
        result.outputs = {k: _fmt(v) for k, v in render(job.get("outputs") or {}, final).items()}
        return result

    def _uses(self, step: dict, ctx: dict, workspace: Path) -> StepResult:
        action = step["uses"].split("@", 1)[0]
        with_ = render(step.get("with") or {}, ctx)
        label = step.get("name") or step["uses"]
        if action == "actions/checkout":
            dest = (workspace / str(with_.get("path", "."))).resolve()
            if workspace.resolve() not in (dest, *dest.parents):
                raise ValueError(f"checkout path escapes the workspace: {with_.get('path')}")
            ref = str(with_.get("ref") or ctx["github"]["sha"])
            if dest.exists() and any(dest.iterdir()):
                raise ValueError(f"checkout into a non-empty directory {dest}")
            subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(self.repo), str(dest)],
                           check=True, capture_output=True)
            subprocess.run(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", ref], cwd=dest,
                           check=True, capture_output=True)
            if self.on_checkout:
                self.on_checkout(dest)
            return StepResult(label, "success", 0, f"checked out {ref} into {dest}\n")
        if action == "actions/setup-python":
            return StepResult(label, "success", 0, f"python {with_.get('python-version')} (simulated)\n")
        if action == "actions/create-github-app-token":
            if not (with_.get("client-id") or with_.get("app-id")):
                return StepResult(label, "failure", 1, "", "The 'client-id' (or deprecated 'app-id') input must be set "
                                                           "to a non-empty string.\n")
            if not with_.get("private-key"):
                return StepResult(label, "failure", 1, "", "Input required and not supplied: private-key\n")
            if self.app_token is None:
                raise ValueError("the workflow creates a GitHub App token: pass app_token= to WorkflowRunner")
            return StepResult(label, "success", 0, "GitHub App installation token created (simulated)\n",
                              outputs={"token": self.app_token, "installation-id": "4242", "app-slug": "promotion"})
        raise NotImplementedError(f"the harness does not simulate {step['uses']}")


# -- payloads shaped like GitHub's webhook payloads ----------------------------------

def _repository(full_name: str, default_branch: str = "main") -> dict:
    owner, name = full_name.split("/")
    return {"id": 1296269, "name": name, "full_name": full_name, "private": False,
            "owner": {"login": owner, "id": 1, "type": "Organization"},
            "default_branch": default_branch, "html_url": f"https://github.com/{full_name}",
            "url": f"https://api.github.com/repos/{full_name}"}


def _user(login: str) -> dict:
    return {"login": login, "id": abs(hash(login)) % 10**6, "type": "User"}


def pull_request_payload(*, repository: str, number: int, base_sha: str, head_sha: str,
                         author: str = "alice", action: str = "opened", base_ref: str = "main",
                         head_ref: str = "promote", title: str = "Promote") -> dict:
    """A ``pull_request`` event payload (the fields GitHub documents that tools read)."""
    repo = _repository(repository, base_ref)
    pr = {
        "number": number, "state": "open", "title": title, "user": _user(author), "draft": False,
        "html_url": f"https://github.com/{repository}/pull/{number}",
        "url": f"https://api.github.com/repos/{repository}/pulls/{number}",
        "head": {"ref": head_ref, "sha": head_sha, "label": f"{repo['owner']['login']}:{head_ref}", "repo": repo,
                 "user": repo["owner"]},
        "base": {"ref": base_ref, "sha": base_sha, "label": f"{repo['owner']['login']}:{base_ref}", "repo": repo,
                 "user": repo["owner"]},
        "merged": False,
    }
    return {"action": action, "number": number, "pull_request": pr, "repository": repo,
            "sender": _user(author)}


def pull_request_review_payload(*, repository: str, number: int, base_sha: str, head_sha: str,
                                reviewer: str, state: str = "approved", author: str = "alice",
                                action: str = "submitted", review_id: int = 80) -> dict:
    """A ``pull_request_review`` event payload."""
    base = pull_request_payload(repository=repository, number=number, base_sha=base_sha,
                                head_sha=head_sha, author=author)
    review = {"id": review_id, "user": _user(reviewer), "state": state, "commit_id": head_sha,
              "body": "", "submitted_at": "2024-05-01T12:00:00Z",
              "html_url": f"https://github.com/{repository}/pull/{number}#pullrequestreview-{review_id}"}
    return {"action": action, "review": review, "pull_request": base["pull_request"],
            "repository": base["repository"], "sender": _user(reviewer)}


def push_payload(*, repository: str, before: str, after: str, ref: str = "refs/heads/main",
                 pusher: str = "alice", default_branch: str = "main", commits: list[dict] | None = None) -> dict:
    """A ``push`` event payload."""
    return {"ref": ref, "before": before, "after": after, "created": set(before) == {"0"},
            "deleted": False, "forced": False, "base_ref": None,
            "compare": f"https://github.com/{repository}/compare/{before[:12]}...{after[:12]}",
            "commits": commits or [], "head_commit": (commits or [None])[-1],
            "repository": _repository(repository, default_branch),
            "pusher": {"name": pusher, "email": f"{pusher}@example.com"}, "sender": _user(pusher)}


def workflow_dispatch_payload(*, repository: str, inputs: dict[str, Any], ref: str = "refs/heads/main",
                              sender: str = "alice", workflow: str = ".github/workflows/rollback.yml") -> dict:
    """A ``workflow_dispatch`` event payload."""
    return {"inputs": inputs, "ref": ref, "repository": _repository(repository),
            "sender": _user(sender), "workflow": workflow}


def schedule_payload(*, repository: str, cron: str) -> dict:
    """A ``schedule`` event payload."""
    return {"schedule": cron, "repository": _repository(repository), "workflow": ".github/workflows/reconcile.yml"}
