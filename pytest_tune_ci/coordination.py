"""Who runs what, where: stage-run claims, GPU leases and the gate.

The same calls serve a serial run and every xdist worker: a worker claims a
stage-run (a test file's repeat) through a lock file in the run directory,
then leases GPUs through the gate, so two workers never run the same
stage-run or share a GPU, and a crashed worker's claims and leases are freed
by the operating system.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout

from .gpu import Gate
from .gpu import GpuPool
from .gpu import LeaseManager
from .gpu import make_backend
from .gpu.lease import HostLock
from .stages import Stage


@dataclass
class Lease:
    failed: str | None = None
    waited_s: float = 0.0
    gpus: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Coordinator:
    def __init__(
        self,
        *,
        spec: str | None,
        rootdir: Path,
        free_mib: int,
        wait_s: float,
        exclude: list[int],
        say: Callable[[str], None],
    ) -> None:
        self.backend = make_backend(spec, base=rootdir)
        self.pool = GpuPool.from_env(exclude)
        self.rootdir = rootdir
        self.free_mib = free_mib
        self.wait_s = wait_s
        self.say = say
        self._gate: Gate | None = None
        self._run_dir: Path | None = None
        self._said: set[str] = set()

    @property
    def notice(self) -> str | None:
        return self.backend.notice

    def gate(self, run_dir: Path) -> Gate:
        if self._gate is None or self._run_dir != run_dir:
            self._gate = Gate(
                self.backend,
                self.pool,
                free_mib=self.free_mib,
                wait_s=self.wait_s,
                lease=LeaseManager(run_dir),
                log=self.say,
            )
            self._run_dir = run_dir
        return self._gate

    def precheck(
        self, model: Any, stages: list[Stage], run_dir: Path
    ) -> tuple[dict[str, Any], list[str]]:
        from .precheck import run_precheck

        run_dir.mkdir(parents=True, exist_ok=True)
        result = run_precheck(model, stages, self.rootdir, self.backend, run_dir)
        return result.data, list(result.lines)

    @contextlib.contextmanager
    def claim(self, state: Path, stem: str, k: int) -> Iterator[bool]:
        """Hold the claim of one stage-run; False when another worker has it."""
        lock = FileLock(str(state / f"{stem}_run{k}.claim"), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release(force=True)

    @contextlib.contextmanager
    def lease(self, gpus: int, exclusive: bool, run_dir: Path) -> Iterator[Lease]:
        """Wait for the host lock and free GPUs; give everything back after."""
        host = HostLock(run_dir)
        host.acquire(exclusive=exclusive)
        gate = self.gate(run_dir)
        try:
            decided = gate.before_attempt(gpus)
            lease = Lease(
                failed=None if decided.ok else decided.reason,
                waited_s=decided.waited_s,
                gpus=list(decided.gpus),
                env=dict(decided.env),
                notes=list(decided.notes),
            )
            if decided.cleaned:
                self.say(f"ended stale calibration process(es) {decided.cleaned}")
            for note in decided.notes:
                # e.g. memory the calibrating process holds itself: once each.
                if note not in self._said and note != self.backend.notice:
                    self._said.add(note)
                    self.say(note)
            try:
                yield lease
            finally:
                if decided.ok:
                    done = gate.after_repeat(decided.gpus, set())
                    if not done.ok:
                        self.say(done.reason)
                else:
                    gate.release(decided.gpus)
        finally:
            host.release()
