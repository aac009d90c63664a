"""Atomic file writes: a temporary file beside the target, fsynced, then renamed over it.

A crash or Ctrl-C mid-write leaves the previous file whole, never a half-written one. A writer killed
before its rename leaves its ``.NAME.nanogpt-tmp-PID`` behind; the next write of that same file removes it
once its process is gone, and ``prepare`` does the same in the data folders it owns. Only names with our
tag are ever removed: another program's ``.draft.txt.tmp-999`` beside an ``eval --json`` file survives.
A full disk or a refused write is an :class:`AtomicWriteError`: one line naming the target and saying
that the previous file is intact.

Nothing here writes or deletes through a symbolic link planted where the project writes (a run folder,
a lock file, an export folder): :func:`refuse_symlink` turns one into a one-line :class:`PlantedLinkError`.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from .errors import NanoGPTError

# errno values the user can act on (free space, fix permissions, pick a writable folder)
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
USER_ERRNOS = {*DISK_FULL, errno.EACCES, errno.EPERM, errno.EROFS}
TMP_TAG = "nanogpt-tmp"  # in every temporary name we write, so clean-up never takes another program's file
_TMP = re.compile(rf"^\.(.+)\.{TMP_TAG}-(\d+)$")


class AtomicWriteError(NanoGPTError, OSError):
    """A write that failed for a reason the user can fix; ``str()`` is the whole one-line message."""

    def __init__(self, code: int, strerror: str, filename: str, line: str | None = None) -> None:
        super().__init__(code, strerror, filename)
        self.line = line

    def __str__(self) -> str:
        return self.line or os_error_line(self)


def os_error_line(e: OSError, target: str | Path | None = None) -> str:
    """One line for an OSError the user can fix: what happened, to which path, and what to do."""
    where = target if target is not None else e.filename
    where = f": {where}" if where is not None else ""
    if e.errno in DISK_FULL:
        fix = "free some space and run it again"
    elif e.errno == errno.EROFS:
        fix = "the file system is read-only: choose a writable folder (NANOGPT_HOME or --data-dir)"
    else:
        fix = "check the permissions of the file and its folder"
    return f"{e.strerror or os.strerror(e.errno or 0)}{where}: {fix}"


class PlantedLinkError(NanoGPTError, OSError):
    """A symbolic link where the project writes or deletes; ``str()`` is the whole one-line message."""

    def __str__(self) -> str:
        return (
            f"{self.filename} is a symbolic link: nanogpt never writes or deletes through one "
            "(it could reach files outside the project); remove the link or choose another name"
        )


def refuse_symlink(*paths: str | Path) -> None:
    """Raise :class:`PlantedLinkError` if any of ``paths`` is a symbolic link (a missing path is fine)."""
    for path in paths:
        if os.path.islink(path):
            raise PlantedLinkError(errno.ELOOP, "symbolic link", str(path))


def check_writable_file(path: str | Path, what: str) -> None:
    """Before the work whose result goes to ``path``: refuse a folder, a link, or a parent that is a file."""
    path = Path(path)
    refuse_symlink(path)
    if path.is_dir():
        raise AtomicWriteError(
            errno.EISDIR,
            "is a folder",
            str(path),
            f"{what} {path} is a folder: name a file, e.g. {path / 'figures.json'}",
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise AtomicWriteError(
                    errno.ENOTDIR, "not a folder", str(parent), f"{what} {path}: {parent} is a file, not a folder"
                )
            break


def tmp_path(path: Path) -> Path:
    """This process's temporary name for ``path``: hidden, in the same folder, tagged as ours with the PID."""
    return path.with_name(f".{path.name}.{TMP_TAG}-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a PID we cannot inspect counts as alive)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale_tmp(folder: str | Path, target: str | None = None) -> list[Path]:
    """Remove our ``.NAME.nanogpt-tmp-PID`` files in ``folder`` whose writer is no longer running (only those
    of the file ``target`` when given); return them. Call it only on folders the project owns."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP.match(entry.name)
        if not m or (target is not None and m.group(1) != target):
            continue
        if entry.is_file(follow_symlinks=False) and not pid_alive(int(m.group(2))):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:  # in use (Windows) or already gone: leave it for a later write
                pass
    return removed


def fsync_dir(folder: str | Path) -> None:
    """Make renames in ``folder`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | Path, write: Callable[[io.BufferedWriter], None], before_replace: Callable[[], None] | None = None
) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    ``before_replace`` runs once the new content is complete and durable, just before the rename (the
    checkpoint rotation uses it). A user-fixable OSError becomes an :class:`AtomicWriteError`.
    """
    path = Path(path)
    tmp = tmp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(path.parent, path.name)  # a killed earlier write of this same file
        try:
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            if before_replace is not None:
                before_replace()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except AtomicWriteError:
        raise
    except OSError as e:
        if e.errno not in USER_ERRNOS:
            raise
        kept = f"; the previous {path.name} is intact" if path.exists() else ""
        raise AtomicWriteError(e.errno, e.strerror, str(path), f"{os_error_line(e, path)}{kept}") from None
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def atomic_link(src: str | Path, dst: str | Path) -> None:
    """Make ``dst`` a second name of ``src``'s content, atomically replacing ``dst``.

    A hard link costs no copy; file systems without hard links (FAT, some network shares) get a copy.
    """
    src, dst = Path(src), Path(dst)
    tmp = tmp_path(dst)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError as e:
            if e.errno in USER_ERRNOS - {errno.EPERM}:
                raise
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
