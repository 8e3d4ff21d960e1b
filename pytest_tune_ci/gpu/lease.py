"""GPU leases and the host lock, through OS file locks in the run directory.

One lock file per physical GPU, ``<run-dir>/_locks/gpu<i>.lock``, taken without
blocking: two xdist workers never hold the same GPU, and the kernel drops the
lock of a worker that dies, so a crash never strands a GPU.

The host lock, ``<run-dir>/_locks/exclusive.lock``, lets a stage group run
alone (``exclusive_groups``): normal stage-runs hold it shared, an exclusive
one holds it exclusively. A second file, ``exclusive.turn.lock``, is a
turnstile: an exclusive waiter closes it so that workers re-taking the shared
lock between their runs cannot starve it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from filelock import FileLock
from filelock import Timeout

from ..errors import RunError


LOCKS_DIR = "_locks"
EXCLUSIVE_LOCK = "exclusive.lock"
TURNSTILE_LOCK = "exclusive.turn.lock"


def locks_dir(run_dir: Path) -> Path:
    return run_dir / LOCKS_DIR


class LeaseManager:
    """The GPUs this process has leased; each lease is one held file lock."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = locks_dir(run_dir)
        self._held: dict[int, FileLock] = {}
        self.refused: list[int] = []  # GPUs the last take found leased elsewhere

    def lock_path(self, index: int) -> Path:
        return self.dir / f"gpu{index}.lock"

    def held(self) -> list[int]:
        return sorted(self._held)

    def take(self, gpus: Sequence[int]) -> bool:
        """Lease every GPU in ``gpus`` or none of them; never blocks."""
        new: list[int] = []
        self.refused = []
        for index in gpus:
            if index in self._held:
                continue
            if not self._try(index):
                self.refused = [index]
                self.release(new)
                return False
            new.append(index)
        return True

    def take_first(self, candidates: Sequence[int], count: int) -> list[int] | None:
        """Lease the first ``count`` candidates nobody else holds (all or none)."""
        got: list[int] = []
        new: list[int] = []
        self.refused = []
        for index in candidates:
            if len(got) == count:
                break
            if index in self._held:
                got.append(index)
            elif self._try(index):
                got.append(index)
                new.append(index)
            else:
                self.refused.append(index)
        if len(got) < count:
            self.release(new)
            return None
        return got

    def leased_elsewhere(self, index: int) -> bool:
        """Whether another process holds GPU ``index`` right now (a probe)."""
        if index in self._held:
            return False
        if self._try(index):
            self.release([index])
            return False
        return True

    def release(self, gpus: Iterable[int] | None = None) -> None:
        for index in list(self._held if gpus is None else gpus):
            lock = self._held.pop(index, None)
            if lock is not None:
                lock.release(force=True)

    def close(self) -> None:
        self.release()

    def __enter__(self) -> LeaseManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _try(self, index: int) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        # thread_local=False: the lead may release from another thread.
        lock = FileLock(str(self.lock_path(index)), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        self._held[index] = lock
        return True


Mode = Literal["shared", "exclusive"]


class HostLock:
    """The shared/exclusive host lock (``fcntl.flock``) of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = locks_dir(run_dir)
        self.path = self.dir / EXCLUSIVE_LOCK
        self._fd: int | None = None
        self._turn_fd: int | None = None
        self.mode: Mode | None = None

    def acquire(
        self, exclusive: bool, timeout_s: float | None = None, poll_s: float = 0.05
    ) -> bool:
        """Take the lock; False when ``timeout_s`` passed first (None: wait forever)."""
        if self._fd is not None:
            raise RunError(f"{self.path}: host lock already held ({self.mode})")
        self.dir.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        turn = _open(self.dir / TURNSTILE_LOCK)
        main = _open(self.path)
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        if not (
            _poll(turn, op, deadline, poll_s) and _poll(main, op, deadline, poll_s)
        ):
            os.close(main)
            os.close(turn)
            return False
        if exclusive:
            self._turn_fd = turn  # keep the turnstile closed while we run alone
        else:
            os.close(turn)
        self._fd = main
        self.mode = "exclusive" if exclusive else "shared"
        return True

    def release(self) -> None:
        for fd in (self._fd, self._turn_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        self._fd = self._turn_fd = None
        self.mode = None


@contextlib.contextmanager
def host_lock(
    run_dir: Path, exclusive: bool = False, timeout_s: float | None = None
) -> Iterator[HostLock]:
    """Hold the host lock for a block; :class:`RunError` on timeout."""
    lock = HostLock(run_dir)
    if not lock.acquire(exclusive, timeout_s):
        kind = "exclusive" if exclusive else "shared"
        raise RunError(f"{lock.path}: no {kind} host lock after {timeout_s:g} s")
    try:
        yield lock
    finally:
        lock.release()


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _poll(fd: int, op: int, deadline: float | None, poll_s: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
