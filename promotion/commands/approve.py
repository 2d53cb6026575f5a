"""``promotion approve <env> --by NAME``: record a local approval (not for production).

For laptops and the demo, where there is no pull request to review. The approval is
bound to the version and artifact digest in the environment file, so editing either
needs a new approval. ``promotion gate`` counts these only outside GitHub Actions.
"""

from __future__ import annotations

from promotion.commands._common import in_github_actions, project

HELP = "record a local approval of the proposed version (local approvals: NOT FOR PRODUCTION)"


def add_arguments(parser) -> None:
    parser.add_argument("environment", nargs="?", help="environment name (environments/<name>.yaml)")
    parser.add_argument("--governance", action="store_true",
                        help="approve the governance changes of the current commit (HEAD) instead")
    parser.add_argument("--by", required=True, metavar="NAME", help="who approves")


def run(args) -> int:
    from promotion._internal.paths import state_dir
    from promotion.errors import UsageError
    from promotion.github.approvals import NOT_FOR_PRODUCTION, record_local

    if in_github_actions():
        raise UsageError("local approvals are not used in GitHub Actions; approve the pull request instead")
    by = args.by.strip()
    if not by or any(c in by for c in "\n\r\0"):
        raise UsageError("--by must be a non-empty name")
    proj = project(args)
    if args.governance == bool(args.environment):
        raise UsageError("approve: name the environment, or pass --governance")
    if args.governance:
        from promotion._internal.git import Git
        from promotion.governance import LOCAL_KEY, LOCAL_VERSION

        head = Git(proj.root).head()  # bound to this commit: a new commit needs a new approval
        path, count = record_local(state_dir(proj.root), LOCAL_KEY, LOCAL_VERSION, f"git:{head}", by)
        print(f"{NOT_FOR_PRODUCTION}: {by} approved the governance changes of {head[:12]} "
              f"({count} approval(s)) in {path}")
        return 0
    env = proj.environment(args.environment)
    policy = proj.policy_for(env)
    required = int((policy.gates.get("approvals") or {}).get("required", 0))
    path, count = record_local(state_dir(proj.root), env.name, env.model.version, env.model.digest, by)
    print(f"{NOT_FOR_PRODUCTION}: {by} approved {env.model.name} v{env.model.version} for {env.name} "
          f"({count} of {required} required) in {path}")
    return 0
