"""The library's one error base and its one-line messages (the bottom layer: imports nothing of ours).

Every error a user can fix (a bad option, a missing or damaged file, a device that is not here) is a
:class:`NanoGPTError`. The command line catches that one class, whatever module raised it, so a new error
class only has to derive from it to reach users as one line instead of a traceback.
"""

from __future__ import annotations


class NanoGPTError(Exception):
    """Something the user can fix; its message says what and how. ``nanogpt`` prints it as one line
    (``error: ...``) and exits with status 2.

    Subclasses keep the built-in base they had before this one existed (``ValueError``, ``OSError``,
    ``RuntimeError``) so that callers catching those still catch them.
    """


def one_line(e: BaseException, *, first: bool = False) -> str:
    """The message of ``e`` on one line, never empty (an exception without a message gives its type name).

    Our messages are written to be read whole, so their lines are joined; ``first`` keeps only the first
    line, for a third-party message (torch, safetensors, json) whose later lines are a dump, not a reason.
    """
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0] if first else " ".join(lines)) if lines else type(e).__name__
