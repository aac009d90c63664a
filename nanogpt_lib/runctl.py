"""Run control for the trainer: pause signals, the run lock, and agreement between torchrun ranks.

Kept apart from ``train.py`` so the training loop reads as a loop. Three promises live here:

* A pause is a checkpoint, whoever sends it. The first SIGINT/SIGTERM asks for a pause at the next step
  boundary; under torchrun the ranks agree on it (any rank's request stops all of them at the same step),
  and a second signal never interrupts a checkpoint being written.
* One trainer per run folder: an exclusive ``flock`` that the OS releases if the process dies.
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

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not locked
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")
EXIT_PAUSED = 75  # `nanogpt train`'s exit status after a pause: EX_TEMPFAIL, so a scheduler sees a pre-empted job


class TrainError(Exception):
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
    """An exclusive ``flock`` on ``path`` (beside the run folder), holding the owner's pid.

    The OS drops the lock when its process dies, however it dies, so a lock is never stuck; a pid left in
    the file by a holder that did not release it (SIGKILL, power loss) is reported as stale and taken over.
    """

    def __init__(self, path: Path, run_name: str) -> None:
        self.path = path
        self.run_name = run_name
        self._fh: Any = None

    def acquire(self) -> None:
        if fcntl is None or self._fh is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise TrainError(f"run {self.run_name!r} is in use by another trainer (pid {holder}, lock {self.path}): "
                             "wait for it, pause it, or train under another --name") from None
        fh.seek(0)
        stale = fh.read().strip()
        if stale and stale != str(os.getpid()):
            print(f"note: taking over the stale lock of process {stale} on run {self.run_name!r} "
                  "(it ended without releasing it)", flush=True)
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.truncate(0)  # an empty file: released cleanly (a pid left behind marks a stale lock)
            self._fh.close()  # closing drops the flock
            self._fh = None


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
