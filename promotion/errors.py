"""The one error family that reaches users.

Every failure the CLI can report is an :class:`Error`; foreign exceptions (MLflow,
requests, YAML, git) are translated at the boundary where they occur, so the CLI has a
single ``except Error`` that prints :meth:`Error.diagnostics` and exits with
:attr:`Error.exit_code`::

    Error                      exit 1 unless stated
    ├── BadInput               exit 2: the user's input is wrong, nothing was changed
    │   ├── ConfigError        a config file is invalid (file:line path: message)
    │   └── UsageError         bad command-line arguments
    ├── RegistryError          the model registry failed or lacks what was asked
    ├── ServiceError           the serving endpoint failed or refused
    ├── MetricsError           a metrics source failed or returned nonsense
    ├── GitError               a git command failed
    ├── GitHubError            the GitHub REST API failed
    ├── RecordError            a record could not be built, signed, stored or verified
    │   └── VerificationError  a signature, digest or chain link does not check out
    └── RolloutError           the rollout controller cannot proceed
"""

from __future__ import annotations


class Error(Exception):
    """Base of every error the CLI reports to a user."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def diagnostics(self) -> str:
        """The user-facing text: one line, no traceback."""
        return self.message


class BadInput(Error):
    """Input that cannot be acted on; nothing was changed."""

    exit_code = 2


class ConfigError(BadInput):
    """A config file is invalid. Carries one line per problem."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def diagnostics(self) -> str:
        return "\n".join(self.problems)


class UsageError(BadInput):
    """Bad command-line arguments."""


class RegistryError(Error):
    """The model registry failed, or lacks the model, version or metric asked for."""


class ServiceError(Error):
    """The serving endpoint failed or refused a call."""


class MetricsError(Error):
    """A metrics source failed or returned something that cannot be read."""


class GitError(Error):
    """A git command failed."""


class GitHubError(Error):
    """The GitHub REST API failed or answered with an unexpected payload."""


class RecordError(Error):
    """A promotion record could not be built, signed, stored or read."""


class VerificationError(RecordError):
    """A signature, digest or hash-chain link does not check out."""


class RolloutError(Error):
    """The rollout controller cannot proceed."""
