"""Atomic file writes: a temporary file beside the target, fsynced, then renamed over it.

A crash or Ctrl-C mid-write leaves the previous file whole, never a half-written one. A writer killed
before its rename leaves its ``.NAME.tmp-PID`` behind; the next write into that folder removes such
files once their process is gone. A full disk or a refused write is an :class:`AtomicWriteError`: one
line naming the target and saying that the previous file is intact.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

# errno values the user can act on (free space, fix permissions, pick a writable folder)
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
USER_ERRNOS = {*DISK_FULL, errno.EACCES, errno.EPERM, errno.EROFS}
_TMP = re.compile(r"^\..+\.tmp-(\d+)$")


class AtomicWriteError(OSError):
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


def tmp_path(path: Path) -> Path:
    """This process's temporary name for ``path``: hidden, in the same folder, tagged with the PID."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


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


def clean_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID`` files in ``folder`` whose writer is no longer running; return them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not pid_alive(int(m.group(1))):
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


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None],
                 before_replace: Callable[[], None] | None = None) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    ``before_replace`` runs once the new content is complete and durable, just before the rename (the
    checkpoint rotation uses it). A user-fixable OSError becomes an :class:`AtomicWriteError`.
    """
    path = Path(path)
    tmp = tmp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(path.parent)
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
