"""``promotion propose <env> --version N``: open the pull request that promotes a version.

Creates a branch, sets ``model.version`` and ``model.digest`` in the environment file
(comments and layout kept; the digest is recomputed from the artifact in the registry),
commits, and opens the pull request through the GitHub API when ``GITHUB_TOKEN`` and a
repository (``--repo`` or ``$GITHUB_REPOSITORY``) are configured; otherwise prints the
exact commands to push and open it. The body carries the challenger-vs-champion table.
"""

from __future__ import annotations

import io
import shlex

from promotion.commands._common import project
from promotion.config import file_key

HELP = "branch, edit environments/<env>.yaml to a new version (and digest), commit, open the pull request"

SHOWN = ("auc", "precision", "recall", "fpr", "f1", "latency_p95_ms")


def add_arguments(parser) -> None:
    parser.add_argument("environment", help="environment name (environments/<name>.yaml)")
    parser.add_argument("--version", type=int, required=True, help="registry version to propose")
    parser.add_argument("--branch", default=None, help="branch to create (default: promote/<env>-v<N>)")
    parser.add_argument("--base", default=None, help="branch the pull request targets (default: the current branch)")
    parser.add_argument("--repo", default=None, metavar="OWNER/NAME", help="GitHub repository (default: $GITHUB_REPOSITORY)")
    parser.add_argument("--remote", default="origin", help="git remote to push to (default: origin)")


def run(args) -> int:
    import os

    from promotion._internal.git import Git
    from promotion._internal.paths import state_dir
    from promotion.config import load_environment
    from promotion.errors import GitError, UsageError
    from promotion.registry import Registry

    proj = project(args)
    env = proj.environment(args.environment)
    if args.version < 1:
        raise UsageError("--version must be >= 1")
    registry = Registry.for_root(proj.root, tracking_uri=env.tracking_uri)
    mv = registry.version(env.model.name, args.version)
    digest = registry.artifact_digest(mv.name, mv.version)
    if env.model.version == mv.version and env.model.digest == digest:
        raise UsageError(f"{env.display} already names {mv.name} v{mv.version} with digest {digest}")

    git = Git(proj.root)
    if not git.is_repo():
        raise GitError(f"{proj.root} is not a git repository")
    rel = env.path.resolve().relative_to(proj.root.resolve()).as_posix()
    if git("status", "--porcelain", "--", rel).strip():
        raise UsageError(f"{rel} has uncommitted changes; commit or stash them first")
    base = args.base or git.current_branch()
    branch = args.branch or f"promote/{env.name}-v{mv.version}"
    git("check-ref-format", "--branch", branch)
    champion = registry.alias(env.model.name, env.name)

    git("checkout", "-q", "-b", branch)
    try:
        env.path.write_text(edit_environment(env.path.read_text(encoding="utf-8"), mv.version, digest), encoding="utf-8")
        load_environment(env.path, proj.root)  # the edit must still validate
        title = f"Promote {mv.name} v{mv.version} to {env.name}"
        sha = git.commit(f"{title}\n\nartifact {digest}", [rel])
    except Exception:
        git("checkout", "-q", "--", rel, check=False)
        git("checkout", "-q", base, check=False)
        git("branch", "-q", "-D", branch, check=False)
        raise
    body = pr_body(registry, env, mv, champion, digest)
    out = state_dir(proj.root) / "proposals" / f"{file_key(env.name)}-v{mv.version}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    print(f"committed {sha[:12]} on {branch}: {rel} -> {mv.name} v{mv.version} ({digest})")

    repo = args.repo or os.environ.get("GITHUB_REPOSITORY")
    token = os.environ.get("GITHUB_TOKEN")
    if not (repo and token):
        print("to open the pull request, run:")
        print(f"  git push -u {shlex.quote(args.remote)} {shlex.quote(branch)} && "
              f"gh pr create --base {shlex.quote(base)} --head {shlex.quote(branch)} "
              f"--title {shlex.quote(title)} --body-file {shlex.quote(str(out))}")
        return 0
    from promotion.github.client import GitHubClient
    from promotion.github.context import parse_repo

    owner, name = parse_repo(repo)
    git("push", "-q", "-u", args.remote, branch)
    pr = GitHubClient.from_env().post(f"/repos/{owner}/{name}/pulls",
                                      {"title": title, "head": branch, "base": base, "body": body})
    print(f"opened pull request #{pr.get('number')}: {pr.get('html_url')}")
    return 0


def edit_environment(text: str, version: int, digest: str) -> str:
    """``text`` with model.version and model.digest replaced; comments and layout kept."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    doc = yaml.load(text)
    doc["model"]["version"] = version
    doc["model"]["digest"] = digest
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def pr_body(registry, env, mv, champion: int | None, digest: str) -> str:
    """Markdown: what is proposed, and the challenger-vs-champion holdout metrics."""
    old = registry.version(mv.name, champion) if champion is not None else None
    keys = [k for k in SHOWN if k in mv.metrics] + sorted(k for k in mv.metrics if k.startswith(("tpr_", "fpr_")))
    head = f"| metric | v{mv.version} (challenger) | " + (f"v{old.version} (champion) | change |" if old else "champion |")
    lines = [
        f"Promotes **{mv.name} v{mv.version}** to **{env.name}**.",
        "",
        f"- artifact: `{digest}` (recomputed from the registry)",
        f"- data snapshot: `{mv.tags.get('data_snapshot', '?')}`; code: `{mv.tags.get('code_commit', '?')}`",
        "- champion: " + (f"v{old.version} (registry alias `{env.name}`)" if old else "none (first promotion)"),
        "",
        head,
        "| --- | --- | --- |" + (" --- |" if old else ""),
    ]
    for k in keys:
        ours = mv.metrics[k]
        if old is not None and k in old.metrics:
            theirs = old.metrics[k]
            lines.append(f"| {k} | {ours:.4g} | {theirs:.4g} | {ours - theirs:+.4g} |")
        else:
            lines.append(f"| {k} | {ours:.4g} | " + ("— | — |" if old else "— |"))
    lines += ["", "The `gate` check runs every gate of the policy on this pull request.", ""]
    return "\n".join(lines)

