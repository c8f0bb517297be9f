"""Exceptions invkit raises on purpose: each names the bad input and says how to fix it.

The CLI prints an ``InvkitError`` as a one-line message (no traceback); anything else is a bug.
"""

from __future__ import annotations

NAMES_SHOWN = 10  # how many files or names a message lists before "and N more"


def listing(names: list[str]) -> str:
    """The first few names and how many more: one line for a message."""
    more = len(names) - NAMES_SHOWN
    return ", ".join(names[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def described(error: BaseException) -> str:
    """An error as one line: invkit's own message as it is, anything else with its type
    (``TypeError: …``), since a bare message from someone else's code may not say what failed."""
    return str(error) if isinstance(error, InvkitError) else f"{type(error).__name__}: {error}"


def plural(kind: str) -> str:
    """``transform`` → ``transforms``, ``analysis`` → ``analyses``, as ``invkit list`` says."""
    return kind[:-2] + "es" if kind.endswith("is") else kind + "s"


class InvkitWarning(UserWarning):
    """A warning invkit gives on purpose; the CLI prints it as ``invkit: warning: …``."""


class InvkitError(Exception):
    """Base class of every error invkit raises deliberately."""


class UnknownComponentError(InvkitError, KeyError):
    """A component name that no loaded plugin registered."""

    def __init__(
        self,
        kind: str,
        name: str,
        suggestions: list[str],
        known: list[str],
        note: str = "",
        label: str | None = None,
    ):
        """``label``: how the message names the kind (``model loader`` for a spec's scheme)."""
        self.label = label = label or kind
        self.kind = kind
        self.name = name
        self.suggestions = suggestions
        self.known = known
        if suggestions:
            hint = "did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
        elif known:
            hint = "known: " + ", ".join(known)
        else:
            hint = f"no {label} is registered at all"
        message = (
            f"unknown {label} {name!r}: {hint}{note} "
            f"(`invkit list {plural(kind)}` shows each one with its parameters)"
        )
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class DuplicateComponentError(InvkitError):
    """Two plugins registered a component of the same kind under the same name."""


class PluginError(InvkitError):
    """A plugin failed to load or to register its components (raised in strict mode)."""


class ComponentParameterError(InvkitError, TypeError):
    """A component was given a parameter it does not take, or a value of the wrong kind."""


class StorageError(InvkitError):
    """The results store or the report could not be read or written (disk full, read-only,
    permission denied, folder deleted, damage). The CLI exits with ``EXIT_STORAGE``."""


def unwritable_output(directory: object, error: OSError) -> StorageError:
    """The one message for an output directory that cannot be written."""
    return StorageError(
        f"cannot write to the output directory {str(directory)!r} ({error.strerror or error}); "
        "choose another with --out"
    )


def unwritable_file(path: object, error: OSError) -> StorageError:
    """The one message for a study's own file that cannot be written (a full disk, mostly)."""
    return StorageError(
        f"cannot write {str(path)!r} ({error.strerror or error}); every pass stored before this "
        "one is kept: free space or fix the folder's permissions, then rerun to resume"
    )


EXIT_ERROR = 1  # a bad input, config or component: the message names it
EXIT_STORAGE = 74  # sysexits' EX_IOERR: the output directory failed under the study
EXIT_SIGNAL_BASE = 128  # 130 for Ctrl-C (SIGINT), 143 for SIGTERM


class Interrupted(BaseException):
    """The study was stopped by a signal (Ctrl-C or SIGTERM). A ``BaseException``, so that no
    ``except Exception`` in invkit, a plugin or a user's model swallows it."""

    def __init__(self, signal_number: int, name: str):
        super().__init__(name)
        self.signal_number = signal_number
        self.name = name

    @property
    def exit_code(self) -> int:
        return EXIT_SIGNAL_BASE + self.signal_number


class EstimatorNeeds(InvkitError):
    """An accuracy estimator's needs are not met by the study (no source set, no logits, too
    few models): the message names what is missing, and no number is given."""
