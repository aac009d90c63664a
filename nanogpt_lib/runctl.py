"""Run control for the trainer: pause signals, the run lock, and agreement between torchrun ranks.

Kept apart from ``train.py`` so the training loop reads as a loop. Three promises live here:

* A pause is a checkpoint, whoever sends it. The first SIGINT/SIGTERM asks for a pause at the next step
  boundary; under torchrun the ranks agree on it (any rank's request stops all of them at the same step),
  and a second signal never interrupts a checkpoint being written.
* One trainer per run folder: an exclusive lock (``filelock``: ``flock`` on POSIX, ``LockFileEx`` on Windows,
  a marker file where neither exists) that the OS releases if the process dies.
* No rank waits forever for a rank that has failed: setup errors are shared, so every rank raises.

What torchrun (2.13) does on Ctrl-C: the terminal's SIGINT reaches torchrun only (it starts each worker in
a session of its own); torchrun then sends the same signal once to each worker's process group, waits
``--shutdown-timeout`` seconds (default 30, ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``) and sends SIGKILL. When a
worker exits with a non-zero code first, torchrun stops the other workers with SIGTERM. A scheduler
(``scancel``, ``kill -- -PGID``) may also signal the workers directly, so a worker can see two signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import NanoGPTError
from .files import pid_alive, refuse_symlink

T = TypeVar("T")
EXIT_PAUSED = 75  # `nanogpt train`'s exit status after a pause: EX_TEMPFAIL, so a scheduler sees a pre-empted job


class TrainError(NanoGPTError):
    """A run that cannot start or go on; the message says why and what to do."""


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.elastic) sets TORCHELASTIC_RUN_ID in every worker's environment."""
    return "TORCHELASTIC_RUN_ID" in os.environ


class PauseSignals:
    """SIGINT/SIGTERM set :attr:`requested`; the loop checks it between steps.

    A second SIGINT aborts at once only in a single process started by hand (the terminal's "I mean it"),
    and even then not while a checkpoint is being written: the abort waits for the file to be complete.
    Under torchrun a second signal is the launcher's own forwarding or its SIGTERM to the survivors, so it is
    noted and ignored; the launcher's SIGKILL after its shutdown timeout is the real abort.
    """

    def __init__(self, launched: bool = False, prefix: str = "") -> None:
        self.requested = False
        self.launched = launched
        self.prefix = prefix
        self._saving = False
        self._abort_after_save = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if not self.requested:
            self.requested = True
            again = "" if self.launched else " (Ctrl-C again to abort)"
            print(f"\n{self.prefix}{name} received: finishing this step, then saving a checkpoint{again}", flush=True)
        elif self.launched or signum != signal.SIGINT:
            print(f"{self.prefix}{name} received again: already pausing", flush=True)
        elif self._saving:
            self._abort_after_save = True
            print(f"{self.prefix}{name} received again: aborting once the checkpoint is written", flush=True)
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[PauseSignals]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals can only be handled on the main thread
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """Write a checkpoint whole: a second Ctrl-C during it aborts only after it."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._abort_after_save:
            raise KeyboardInterrupt


class RunLock:
    """An exclusive lock on ``path`` (beside the run folder) that records the holder's pid.

    ``filelock`` picks the platform's lock: ``flock`` on POSIX and ``LockFileEx`` on Windows, both dropped by
    the OS when their process dies, however it dies; a marker file holding the pid where neither exists
    (a dead holder's marker is taken over). A pid left in the file by a holder that did not release it
    (SIGKILL, power loss) is reported and taken over. A symbolic link or a folder at ``path`` is refused:
    the lock is never written through a link planted there. Released, the file is removed.
    """

    def __init__(self, path: Path, run_name: str) -> None:
        self.path = path
        self.run_name = run_name
        self._lock: Any = None  # a filelock.BaseFileLock while held
        self._stale = ""
        self._made_parent = False

    @staticmethod
    def native() -> bool:
        """Whether the OS holds the lock (else a marker file that ``filelock`` manages itself)."""
        import filelock  # here: importing it takes 0.1 s, and the command line imports this module for --help

        return filelock.FileLock is not getattr(filelock, "SoftFileLock", None)

    def _record_pid(self, fd: int) -> None:
        """Called by filelock with the locked file: note a pid left by a dead holder, write ours."""
        os.lseek(fd, 0, os.SEEK_SET)  # lseek/read/write, not pread/pwrite: Windows has those
        self._stale = os.read(fd, 64).decode(errors="replace").strip()
        os.lseek(fd, 0, os.SEEK_SET)
        os.truncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())

    def _holder(self) -> str:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                first = fh.readline().strip()
        except OSError:
            return "unknown"
        return first if first.isdigit() else "unknown"

    def acquire(self) -> None:
        if self._lock is not None:
            return
        refuse_symlink(self.path)
        if self.path.is_dir():
            raise TrainError(f"the run lock {self.path} is a folder: remove it (it must be a file nanogpt manages)")
        self._made_parent = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        import filelock

        options = {"on_acquired": self._record_pid} if self.native() else {}
        lock = filelock.FileLock(str(self.path), timeout=0, thread_local=False, **options)
        self._stale = ""
        try:
            lock.acquire()
        except filelock.Timeout:
            self._remove_parent()
            raise TrainError(
                f"run {self.run_name!r} is in use by another trainer (pid {self._holder()}, lock "
                f"{self.path}): wait for it, pause it, or train under another --name"
            ) from None
        self._lock = lock
        if self._stale.isdigit() and self._stale != str(os.getpid()):
            how = (
                "it is running but no longer holds the lock: a pid reused, or a trainer on another machine"
                if pid_alive(int(self._stale))
                else "it ended without releasing it"
            )
            print(
                f"note: taking over the stale lock of process {self._stale} on run {self.run_name!r} ({how})",
                flush=True,
            )

    def release(self) -> None:
        if self._lock is not None:
            if self.native():  # removed while held, so no trainer takes the file between release and removal
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            self._lock.release()  # the OS lock is dropped; a marker file is removed by filelock itself
            self._lock = None
            self._remove_parent()

    def _remove_parent(self) -> None:
        """A refused run leaves nothing behind: not even the runs folder, if taking the lock made it."""
        if self._made_parent:
            with contextlib.suppress(OSError):  # not empty: a run was written there
                self.path.parent.rmdir()


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when run alone), and the few collectives the
    trainer needs outside the model."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (one tiny all-reduce per call)."""
        if self.world == 1:
            return flag
        import torch
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def agree(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank; if it raised on any rank, raise on all of them (the rank's own error
        where it has one), so that no rank is left waiting in a collective for one that has failed."""
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, on this rank and the others
            error = e
        if self.world > 1:
            import torch.distributed as dist

            reports: list[Any] = [None] * self.world
            dist.all_gather_object(reports, None if error is None else f"{error}")
            failed = [(r, msg) for r, msg in enumerate(reports) if msg is not None]
            if error is None and failed:
                rank, msg = failed[0]
                raise TrainError(f"rank {rank} failed: {msg}")
        if error is not None:
            raise error
        return result

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (pickled: small objects, or a checkpoint read once by rank 0)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def setup_distributed() -> Dist:
    """Join the torchrun job, if there is one (gloo on CPU, NCCL on CUDA)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist()
    import torch  # here, not at the top: the CLI reads EXIT_PAUSED from this module without loading torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
