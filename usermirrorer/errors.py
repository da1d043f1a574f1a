"""One small hierarchy of errors, so callers can catch what they can handle.

Every message says what was received, what was expected and, where possible, how to fix it.
Data errors carry ``file:line: field: problem`` so a user can open the file at the line.
"""

from __future__ import annotations

__all__ = [
    "UserMirrorerError",
    "DataError",
    "ConfigError",
    "InvalidAction",
    "BackendError",
    "MissingDependency",
]


class UserMirrorerError(Exception):
    """Base class of every error raised on purpose by usermirrorer."""


class DataError(UserMirrorerError, ValueError):
    """Input data is malformed. ``problems`` lists every ``file:line: field: what`` found."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            shown = self.problems[:20]
            more = len(self.problems) - len(shown)
            message = message + "\n  " + "\n  ".join(shown)
            if more > 0:
                message += f"\n  ... and {more} more problem(s)"
        super().__init__(message)


def data_problem(path: object, line: int | None, field: str | None, what: str) -> str:
    """Format one problem as ``file:line: field: what`` (line is 1-based)."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return f"{where}: {field}: {what}" if field else f"{where}: {what}"


class ConfigError(UserMirrorerError, ValueError):
    """Options that cannot work together, or an unknown name; says which setting to change."""


class InvalidAction(UserMirrorerError, ValueError):
    """An environment action (slate) that breaks the action-space contract."""


class BackendError(UserMirrorerError, RuntimeError):
    """An LLM backend could not do what was asked (tokenizer, context length, server)."""


class MissingDependency(UserMirrorerError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""

    def __init__(self, package: str, extra: str):
        super().__init__(
            f"this feature needs the package {package!r}, which is not installed; "
            f"install it with: pip install 'usermirrorer[{extra}]'"
        )
