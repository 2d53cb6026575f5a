"""The few git reads that records need: first-parent history, blobs, uncommitted files.

Records are judged by *when git received them*, not by a time their signer wrote: the
commit that added a record (on the first-parent line of the current branch, so a side
branch merged later counts from its merge) fixes which signers were valid for it. This
module reads that history with a handful of ``git`` calls, whatever the number of records.

Usage::

    from promotion.records.history import GitHistory
    git = GitHistory.open(root)            # None outside a git repository (or before any commit)
    commits = git.log("environments/trust.yaml", "environments/records/prod/")
    for c in commits:
        print(c.index, c.sha[:12], c.author, c.changes)   # changes: [(status, repo path)]
    blobs = git.cat([f"{git.head}:{git.prefix}environments/trust.yaml"])
    git.uncommitted("environments/records/prod/")      # repo paths that differ from HEAD
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from promotion.errors import BadInput, GitError

GITHUB_COMMITTER = "noreply@github.com"  # the committer of commits made by GitHub's merge button


@dataclass
class Commit:
    """One first-parent commit that touched the paths asked for."""

    index: int            # position on the first-parent line, oldest first
    sha: str
    time: int             # committer time (written by the committer: shown, never trusted)
    author: str
    subject: str
    parents: int
    changes: list[tuple[str, str]] = field(default_factory=list)  # (A/M/D/T, path from the top level)
    committer_email: str = ""

    @property
    def is_merge(self) -> bool:
        return self.parents > 1

    @property
    def merged_by_github(self) -> bool:
        """A merge commit, or one GitHub's merge button committed (squash or rebase merge).

        Both are what a pull request leaves on a protected branch; without branch
        protection anyone who can push can make either, so this is evidence only there.
        """
        return self.is_merge or self.committer_email == GITHUB_COMMITTER


def load_yaml_blob(blob: bytes | None):
    """The data of a YAML file's bytes from git; None when absent or unreadable."""
    from promotion._internal import yamlio

    if blob is None:
        return None
    try:
        return yamlio.loads(blob.decode("utf-8")).data
    except Exception:  # any malformed file (or one nested past the parser's limits) is reported the same way
        return None


def model_from(data) -> tuple | None:
    """``(name, version, digest)`` an environment file's data names; None if it names none."""
    try:
        m = data["model"]
        return (str(m["name"]), int(m["version"]), str(m["digest"]))
    except Exception:  # any malformed file is reported the same way
        return None


class GitHistory:
    """Read-only access to a repository's first-parent history at ``HEAD``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.prefix = self._run("rev-parse", "--show-prefix").decode().strip()
        head = self._run("rev-parse", "--verify", "-q", "HEAD", check=False).decode().strip()
        if not head:
            raise BadInput(f"{self.root}: the repository has no commits to audit")
        self.head = head

    @classmethod
    def open(cls, root: str | Path) -> "GitHistory | None":
        """The history of ``root``, or None if it is not inside a git work tree with commits."""
        try:
            return cls(root)
        except (BadInput, GitError):
            return None

    def _run(self, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
        try:
            # literal pathspecs: a path read from a file (a policy path) never acts as pathspec magic
            proc = subprocess.run(["git", "-c", "core.quotepath=off", "--literal-pathspecs", *args], cwd=self.root,
                                  input=input, capture_output=True)
        except FileNotFoundError:
            raise GitError("git is not installed") from None
        except NotADirectoryError:
            raise BadInput(f"{self.root}: not a directory") from None
        if check and proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            if args[0] == "rev-parse":
                raise BadInput(f"{self.root}: not a git repository")
            raise GitError(f"git {args[0]} failed: {detail[-1] if detail else proc.returncode}")
        return proc.stdout

    def log(self, *paths: str) -> list[Commit]:
        """First-parent commits of ``HEAD`` touching ``paths`` (relative to the root), oldest first.

        A merge shows the changes it brought relative to its first parent, so what a
        side branch added counts from the merge, never from the branch's own commits.
        """
        out = self._run("log", "--first-parent", "--diff-merges=first-parent", "--no-renames", "--reverse",
                        "--format=%x1e%H%x1f%ct%x1f%an%x1f%P%x1f%ce%x1f%s", "--name-status", "HEAD", "--", *paths)
        commits = []
        for chunk in out.decode("utf-8", "replace").split("\x1e")[1:]:
            lines = chunk.split("\n")
            sha, ts, author, parents, email, subject = lines[0].split("\x1f", 5)
            changes = []
            for line in lines[1:]:
                if "\t" in line:
                    status, path = line.split("\t", 1)
                    changes.append((status[0], path))
            commits.append(Commit(len(commits), sha, int(ts), author, subject, len(parents.split()), changes, email))
        return commits

    def ls_tree(self, directory: str) -> list[str]:
        """Names of the files directly under ``directory`` (relative to the root) at ``HEAD``."""
        out = self._run("ls-tree", "--full-name", "--name-only", "HEAD", directory)
        full = self.prefix + directory
        return [line[len(full):] for line in out.decode("utf-8", "replace").splitlines() if line.startswith(full)]

    def cat(self, specs: list[str]) -> dict[str, bytes]:
        """Contents of ``<rev>:<path>`` specs in one ``git cat-file --batch``; missing ones absent."""
        if not specs:
            return {}
        out = self._run("cat-file", "--batch", input=("\n".join(specs) + "\n").encode())
        result = {}
        pos = 0
        for spec in specs:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            pos = end + 1
            if len(header) < 3:  # "<spec> missing" or "<spec> ambiguous"
                continue
            size = int(header[2])
            if header[1] == b"blob":
                result[spec] = out[pos:pos + size]
            pos += size + 1
        return result

    def first_parent_changes(self, sha: str, *paths: str) -> list[tuple[str, str]] | None:
        """``(status, path)`` of what commit ``sha`` changed under ``paths`` relative to its first
        parent (a merge: what it brought to this branch); None when it has no parent."""
        out = self._run("diff", "--no-renames", "--name-status", f"{sha}^1", sha, "--", *paths, check=False)
        if not out and self._run("rev-parse", "--verify", "-q", f"{sha}^1", check=False).strip() == b"":
            return None
        changes = []
        for line in out.decode("utf-8", "replace").splitlines():
            if "\t" in line:
                status, path = line.split("\t", 1)
                changes.append((status[0], path))
        return changes

    def uncommitted(self, *paths: str) -> set[str]:
        """Paths (from the top level) under ``paths`` whose working copy is not what ``HEAD`` holds."""
        out = self._run("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--", *paths)
        result = set()
        for entry in out.decode("utf-8", "replace").split("\0"):
            if len(entry) > 3:
                result.add(entry[3:])
        return result
