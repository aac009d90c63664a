"""One error base: every error a user can fix is a ``NanoGPTError``, which the command line prints as one line
(exit 2) whatever module defines it, including a class it has never heard of."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from test_cli import assert_one_line, run_cli

import nanogpt_lib
from nanogpt_lib import cli
from nanogpt_lib.config import ConfigError
from nanogpt_lib.devices import DeviceError
from nanogpt_lib.errors import NanoGPTError, one_line
from nanogpt_lib.files import AtomicWriteError, PlantedLinkError
from nanogpt_lib.limits import TooLargeError
from nanogpt_lib.paths import ProjectFilesError
from nanogpt_lib.tokenizer import TokenizerFilesError

# The exception classes that are not for the user to fix, each with why. Any other class the package defines
# must be a NanoGPTError, so a new one reaches users as one line and not as a traceback.
NOT_USER_ERRORS = {
    "nanogpt_lib.checkpoint._Damaged": "internal: load_checkpoint turns it into a CheckpointError or a fallback",
    "nanogpt_lib.course.exercises.Wrong": "an exercise check's verdict, shown in the notebook",
    "nanogpt_lib.course.exercises.NotAnswered": "an exercise left blank, shown in the notebook",
    "nanogpt_lib.course.exercises.guard.Off": "a Wrong verdict: the answer called a switched-off function",
}


def exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined (not imported) in a module of the package, by its dotted name."""
    found = {}
    for info in pkgutil.walk_packages(nanogpt_lib.__path__, "nanogpt_lib."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_error_a_user_can_fix_is_a_nanogpt_error():
    classes = exception_classes()
    assert "nanogpt_lib.data.DatasetError" in classes and "nanogpt_lib.course.exercises.Wrong" in classes
    stale = sorted(set(NOT_USER_ERRORS) - set(classes))
    assert not stale, f"listed as not a user's error but no longer defined: {stale}"
    outside = sorted(n for n, c in classes.items() if not issubclass(c, NanoGPTError) and n not in NOT_USER_ERRORS)
    assert not outside, f"derive these from errors.NanoGPTError (or list them in NOT_USER_ERRORS with why): {outside}"
    wrongly = sorted(n for n in NOT_USER_ERRORS if issubclass(classes[n], NanoGPTError))
    assert not wrongly, f"listed as not a user's error but the CLI would print them as one: {wrongly}"


@pytest.mark.parametrize(
    "cls, builtin",
    [
        (ConfigError, ValueError),
        (TooLargeError, ValueError),
        (DeviceError, ValueError),
        (AtomicWriteError, OSError),
        (PlantedLinkError, OSError),
        (ProjectFilesError, RuntimeError),
        (TokenizerFilesError, RuntimeError),
    ],
)
def test_the_builtin_bases_stay_for_callers_that_catch_them(cls, builtin):
    assert issubclass(cls, NanoGPTError) and issubclass(cls, builtin)


def test_an_os_error_of_ours_keeps_its_errno_and_file():
    e = AtomicWriteError(28, "No space left on device", "/x/ckpt.pt", "no space for /x/ckpt.pt: free some")
    assert (e.errno, e.filename, e.line) == (28, "/x/ckpt.pt", "no space for /x/ckpt.pt: free some")


def test_a_new_error_class_is_one_line_and_exit_2(monkeypatch, capsys):
    """A class the CLI has no list of: deriving from the base is all it takes."""

    class BrandNewError(NanoGPTError):
        pass

    def fail(args):
        raise BrandNewError("the widget is missing;\n  run `nanogpt prepare` first")

    monkeypatch.setitem(cli.COMMANDS, "prepare", fail)
    assert_one_line(*run_cli(capsys, "prepare"), "error: the widget is missing; run `nanogpt prepare` first")


def test_a_plain_exception_is_still_a_traceback(monkeypatch):
    """The base is what makes an error the user's: the same message on a bare Exception is a bug."""
    monkeypatch.setitem(cli.COMMANDS, "prepare", lambda args: (_ for _ in ()).throw(Exception("the widget")))
    with pytest.raises(Exception, match="the widget"):
        cli.main(["prepare"])


@pytest.mark.parametrize(
    "message, whole, first",
    [
        ("one reason", "one reason", "one reason"),
        ("  a reason\n\n   and its fix  \n", "a reason and its fix", "a reason"),
        ("", "RuntimeError", "RuntimeError"),
        ("\n \n", "RuntimeError", "RuntimeError"),
    ],
)
def test_one_line(message, whole, first):
    e = RuntimeError(message)
    assert (one_line(e), one_line(e, first=True)) == (whole, first)
