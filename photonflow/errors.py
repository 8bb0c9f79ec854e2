"""One root for every named input failure, mapped once to the command line's exit codes.

Everything a user can get wrong — a configuration field, a file that is missing or unreadable, a
frame of the wrong shape, a geometry line, a model that does not fit the data — raises a subclass
of :class:`InputError`, whose message names the file, the event or field, and the reason. The
command line prints it as one line per problem (no traceback) and exits with ``exit_code``.

Exit codes (``photonflow --help`` says the same): 0 done; 1 done, but some items failed (listed
in the summary); 2 an input or configuration error before any work; 130 interrupted.
"""

from __future__ import annotations

__all__ = ["InputError", "EXIT_OK", "EXIT_ITEMS_FAILED", "EXIT_INPUT_ERROR", "EXIT_INTERRUPTED", "exit_code_for"]

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130


class InputError(Exception):
    """An input (configuration, file, frame, geometry, model) that photonflow cannot use.

    ``str(err)`` is ready to print; ``err.exit_code`` is what the command line exits with.
    """

    exit_code = EXIT_INPUT_ERROR


def exit_code_for(exc: BaseException) -> int | None:
    """The documented exit code of an exception the command line reports in one line, or None
    for one that is a bug (and keeps its traceback)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, InputError):
        return exc.exit_code
    if isinstance(exc, FileNotFoundError):
        return EXIT_INPUT_ERROR
    return None
