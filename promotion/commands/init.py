"""``promotion init --model NAME``: scaffold a promotion repository for a team's model.

Writes, from the package's templates (:mod:`promotion.templates`)::

    environments/{dev,staging,prod}.yaml   desired state (version 1, placeholder digest)
    environments/trust.yaml                who may sign records
    policies/{dev,staging,prod}.yaml       gates and thresholds for the task
    .github/workflows/*.yml                gates, rollout, rollback, reconcile, ci
    .github/CODEOWNERS, README.md, Makefile, requirements.txt, .gitignore

``--task regression`` judges RMSE and MAE against the champion (and R² >= 0) instead of
recall, FPR, F1 and AUC, and leaves out the fairness gate's TPR/FPR gaps. The result
passes ``promotion validate``. Nothing is overwritten: if any of the files exists, the
command says which, writes nothing and exits 2.

Usage::

    $ promotion init --model churn --dir churn-promotion
    $ promotion init --model house-prices --task regression
"""

from __future__ import annotations

import re
from pathlib import Path

from promotion.errors import UsageError

HELP = "scaffold a promotion repository for a model (environments, policies, workflows, CODEOWNERS, trust file)"

TASKS = ("classification", "regression")
PORTS = {"dev": 3010, "staging": 3020, "prod": 3000}
# the environment schema's model.name pattern (a test keeps them equal)
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")
PLACEHOLDER_REPO = "your-org/promotion"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="NAME", help="the registered model's name in MLflow")
    parser.add_argument("--dir", default=None, metavar="D", help="where to write (default: --root, else the current directory)")
    parser.add_argument("--task", choices=TASKS, default="classification",
                        help="which metrics the policies judge (default: classification)")
    parser.add_argument("--repo", default=None, metavar="OWNER/NAME",
                        help=f"the GitHub repository whose workflows sign records (trust.yaml; default: the "
                             f"placeholder {PLACEHOLDER_REPO})")


def scaffold(model: str, task: str = "classification", repo: str | None = None) -> dict[str, str]:
    """{relative path: text} of a new promotion repository for ``model``."""
    from importlib import resources

    if not MODEL_NAME.fullmatch(model or ""):
        raise UsageError(f"init: --model {model!r}: a letter or digit, then up to 99 letters, digits, '_', '.' or '-'")
    if task not in TASKS:
        raise UsageError(f"init: --task {task!r}: must be one of {', '.join(TASKS)}")
    if repo is not None and not REPO_NAME.fullmatch(repo):
        raise UsageError(f"init: --repo {repo!r}: must be OWNER/NAME")
    root = resources.files("promotion.templates")

    def text(*parts: str) -> str:
        node = root
        for part in parts:
            node = node.joinpath(part)
        return node.read_text(encoding="utf-8")

    def fill(template: str, **values: str) -> str:
        for key, value in values.items():
            template = template.replace("{{" + key + "}}", value)
        return template

    files: dict[str, str] = {}
    for env, port in PORTS.items():
        files[f"environments/{env}.yaml"] = fill(text("environment.yaml"), environment=env, model=model, port=str(port))
        files[f"policies/{env}.yaml"] = text("policies", task, f"{env}.yaml")
    trust = text("trust.yaml")
    if repo:  # the identities only; the comment still says what to replace
        trust = trust.replace(f"repository: {PLACEHOLDER_REPO}", f"repository: {repo}")
    files["environments/trust.yaml"] = trust
    for entry in sorted(root.joinpath("workflows").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yml"):
            files[f".github/workflows/{entry.name}"] = entry.read_text(encoding="utf-8")  # verbatim: ${{ }} stays
    files[".github/CODEOWNERS"] = text("CODEOWNERS")
    files["README.md"] = fill(text("README.md"), model=model, task=task)
    files["Makefile"] = text("Makefile")
    files["requirements.txt"] = text("requirements.txt")
    files[".gitignore"] = text("gitignore")
    return files


def write(target: Path, files: dict[str, str]) -> list[Path]:
    """Write ``files`` under ``target``; refuses (UsageError, nothing written) if any exists."""
    target = target.resolve() if target.exists() else target.absolute()
    clash = [rel for rel in files if (target / rel).exists() or (target / rel).is_symlink()]
    if clash:
        more = f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""
        raise UsageError(f"init: {target / clash[0]} already exists{more}; nothing was written (init never overwrites)")
    if target.exists() and not target.is_dir():
        raise UsageError(f"init: {target} is not a directory")
    for rel in files:
        parent = (target / rel).parent
        while not parent.exists() and parent != target:
            parent = parent.parent  # the nearest folder that exists decides where mkdir lands
        if parent.exists() and target not in (parent.resolve(), *parent.resolve().parents):
            raise UsageError(f"init: {parent} leads outside {target} (a symbolic link); nothing was written")
    written = []
    for rel, content in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as fh:  # "x": never replace a file that appeared meanwhile
            fh.write(content)
        written.append(path)
    return written


def run(args) -> int:
    target = Path(args.dir or args.root or ".")
    files = scaffold(args.model, args.task, args.repo)
    written = write(target, files)
    print(f"wrote {len(written)} files into {target} for {args.task} model {args.model}:")
    for rel in files:
        print(f"  {rel}")
    print("next: `promotion validate`; register a version with promotion.register(...), then `promotion doctor dev`")
    return 0
