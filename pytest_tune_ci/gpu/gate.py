"""The GPU gate: a repeat starts only on GPUs that are really free.

A GPU is *free* when its used memory is at most ``free_mib`` and no compute
process other than the calibration's own holds it. Processes on a GPU fall in
three kinds:

- the calibrating pytest process itself (a test that loads a model
  in-process): reported, never blocking; its known usage is taken off the
  GPU's used memory, and when the driver cannot say how much it uses the
  memory rule is skipped for that GPU;
- *ours*: descendants of the pytest process (a server a repeat started). Before
  an attempt they are stale, left over from an earlier repeat, and are ended;
  after a repeat they are the repeat's and are ended too;
- *foreign*: everything else. Never signalled, whatever happens; the gate
  reports them (pid, MiB, GPU) and waits, up to ``wait_s``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from .. import procs
from ..errors import TuneError
from .backend import Backend
from .backend import GpuInfo
from .backend import GpuPollError
from .backend import GpuProcess
from .lease import LeaseManager
from .pool import GpuPool


DEFAULT_FREE_MIB = 2048
DEFAULT_WAIT_S = 600.0
DEFAULT_POLL_S = 1.0
GPU_NOT_CLEAR = "gpu_not_clear"
_LOG_EVERY_S = 60.0

OwnPids = Callable[[], set[int]]


def calibration_pids() -> set[int]:
    """The pytest process and every live descendant: the calibration's own."""
    return {os.getpid()} | procs.descendants()


@dataclass(frozen=True)
class Holder:
    """A process holding memory on a GPU, as reported to the user."""

    gpu: int
    pid: int
    used_mib: int | None

    def describe(self) -> str:
        return f"pid {self.pid} ({_mib(self.used_mib)}) on GPU {self.gpu}"


@dataclass(frozen=True)
class GpuState:
    """One polled GPU, its processes sorted by whose they are."""

    info: GpuInfo
    mine: tuple[GpuProcess, ...]  # the calibrating pytest process itself
    ours: tuple[GpuProcess, ...]  # its descendants
    foreign: tuple[GpuProcess, ...]

    @property
    def index(self) -> int:
        return self.info.index

    @property
    def self_unknown(self) -> bool:
        return any(p.used_mib is None for p in self.mine)

    @property
    def used_mib(self) -> int:
        """Used memory, less what the pytest process itself holds."""
        own = sum(p.used_mib or 0 for p in self.mine)
        return max(0, self.info.memory_used_mib - own)

    def memory_ok(self, free_mib: int) -> bool:
        return self.self_unknown or self.used_mib <= free_mib

    def free(self, free_mib: int) -> bool:
        return self.memory_ok(free_mib) and not self.ours and not self.foreign

    def free_after_cleanup(self, free_mib: int) -> bool:
        """Free once our own stale processes are ended (their known MiB freed)."""
        if self.foreign:
            return False
        if self.self_unknown:
            return True
        return self.used_mib - sum(p.used_mib or 0 for p in self.ours) <= free_mib

    def holders(self, kind: tuple[GpuProcess, ...]) -> list[Holder]:
        return [Holder(self.index, p.pid, p.used_mib) for p in kind]

    def describe(self, free_mib: int) -> str:
        info = self.info
        parts = [
            f"GPU {info.index}: {info.memory_used_mib} of "
            f"{info.memory_total_mib} MiB used (limit {free_mib} MiB)"
        ]
        parts += [f"foreign pid {p.pid} ({_mib(p.used_mib)})" for p in self.foreign]
        parts += [f"own pid {p.pid} ({_mib(p.used_mib)})" for p in self.ours]
        parts += [f"this pytest ({_mib(p.used_mib)})" for p in self.mine]
        return ", ".join(parts)


def classify(
    gpus: Iterable[GpuInfo], own: set[int], self_pid: int | None = None
) -> list[GpuState]:
    me = os.getpid() if self_pid is None else self_pid
    states = []
    for info in gpus:
        mine = tuple(p for p in info.processes if p.pid == me)
        ours = tuple(p for p in info.processes if p.pid != me and p.pid in own)
        foreign = tuple(p for p in info.processes if p.pid != me and p.pid not in own)
        states.append(GpuState(info, mine, ours, foreign))
    return states


def self_notes(states: Iterable[GpuState]) -> list[str]:
    return [
        f"GPU {s.index}: the calibrating pytest process itself holds "
        f"{_mib(p.used_mib)} (not counted as busy)"
        for s in states
        for p in s.mine
    ]


@dataclass
class GateResult:
    """What :meth:`Gate.before_attempt` decided.

    ``gpus`` are physical indices (record them in the attempt);
    ``cuda_visible_devices`` is the value to set for the repeat, mapped through
    the pool, or None when the gate is off (leave the environment alone).
    ``env`` holds every variable to set.
    """

    outcome: str  # "ok" or "gpu_not_clear"
    gpus: list[int] = field(default_factory=list)
    cuda_visible_devices: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    waited_s: float = 0.0
    cleaned: list[int] = field(default_factory=list)  # stale pids we ended
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass
class CleanupResult:
    """What :meth:`Gate.after_repeat` found and did."""

    ok: bool
    reason: str = ""
    waited_s: float = 0.0
    terminated: list[int] = field(default_factory=list)
    foreign: list[Holder] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Gate:
    def __init__(
        self,
        backend: Backend,
        pool: GpuPool,
        *,
        free_mib: int = DEFAULT_FREE_MIB,
        wait_s: float = DEFAULT_WAIT_S,
        poll_s: float = DEFAULT_POLL_S,
        own_pids: OwnPids = calibration_pids,
        lease: LeaseManager | None = None,
        grace_s: float = 5.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if poll_s <= 0:
            raise TuneError(f"GPU poll interval must be > 0 s, got {poll_s}")
        self.backend = backend
        self.pool = pool
        self.free_mib = free_mib
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.own_pids = own_pids
        self.lease = lease
        self.grace_s = grace_s
        self._log = log

    @property
    def enabled(self) -> bool:
        return self.backend.enabled

    def before_attempt(self, gpus_per_test: int) -> GateResult:
        """Wait for ``gpus_per_test`` free GPUs, lease them, recheck, and return."""
        if gpus_per_test < 0:
            raise TuneError(f"gpus_per_test must be >= 0, got {gpus_per_test}")
        if not self.enabled:
            notes = [self.backend.notice] if self.backend.notice else []
            return GateResult("ok", notes=notes)
        if gpus_per_test == 0:
            # A CPU stage on a GPU host sees no GPU at all.
            return GateResult(
                "ok", cuda_visible_devices="", env={"CUDA_VISIBLE_DEVICES": ""}
            )
        start = time.monotonic()
        deadline = start + self.wait_s
        result = GateResult(GPU_NOT_CLEAR)
        reason = "no poll yet"
        next_log = start
        tried: set[int] = set()
        while True:
            states, poll_error = self._look()
            if states is None:
                reason = poll_error
            else:
                if self._clean_stale(states, result, tried):
                    continue
                _add_notes(result, self_notes(states))
                if len(states) < gpus_per_test:
                    result.reason = (
                        f"needs {gpus_per_test} GPU(s) but the pool "
                        f"({self.pool.describe()}) has {len(states)}"
                    )
                    result.waited_s = time.monotonic() - start
                    return result
                chosen, reason = self._choose(states, gpus_per_test)
                if chosen is not None:
                    result.outcome = "ok"
                    result.gpus = chosen
                    result.env = self.pool.env(chosen)
                    result.cuda_visible_devices = result.env["CUDA_VISIBLE_DEVICES"]
                    result.waited_s = time.monotonic() - start
                    return result
            now = time.monotonic()
            if now >= deadline:
                waited = f"{now - start:.1f} s"
                result.reason = (
                    f"no {gpus_per_test} free GPU(s) after {waited}: {reason}"
                )
                result.waited_s = now - start
                return result
            if now >= next_log:
                self._say(f"waiting for {gpus_per_test} free GPU(s): {reason}")
                next_log = now + _LOG_EVERY_S
            time.sleep(min(self.poll_s, deadline - now))

    def after_repeat(self, gpus: Sequence[int], repeat_pids: set[int]) -> CleanupResult:
        """End what the repeat left on ``gpus``, wait for their memory, release them."""
        try:
            return self._after(list(gpus), set(repeat_pids))
        finally:
            self.release(gpus)

    def release(self, gpus: Iterable[int] | None = None) -> None:
        """Give back leases (``after_repeat`` does; use this on abandoned attempts)."""
        if self.lease is not None:
            self.lease.release(gpus)

    def _after(self, gpus: list[int], repeat_pids: set[int]) -> CleanupResult:
        result = CleanupResult(ok=True)
        if not self.enabled or not gpus:
            return result
        start = time.monotonic()
        deadline = start + self.wait_s
        tried: set[int] = set()
        while True:
            states, reason = self._look(only=gpus)
            if states is not None:
                ours = [p.pid for s in states for p in s.ours if p.pid not in tried]
                if ours:
                    tried.update(ours)
                    ended = procs.terminate(ours, self.grace_s)
                    result.terminated += ended
                    if ended:
                        self._say(f"ended process(es) {_pids(ended)} left on GPUs")
                    continue
                foreign = [h for s in states for h in s.holders(s.foreign)]
                result.foreign = foreign
                for holder in foreign:
                    if holder.pid in repeat_pids:
                        _add_notes(
                            result,
                            [
                                f"pid {holder.pid} was started by the repeat but "
                                "left this process tree; not signalled"
                            ],
                        )
                busy = [s for s in states if not s.memory_ok(self.free_mib) or s.ours]
                if not busy:
                    result.waited_s = time.monotonic() - start
                    return result
                reason = "; ".join(s.describe(self.free_mib) for s in busy)
            now = time.monotonic()
            if now >= deadline:
                result.ok = False
                result.reason = (
                    f"GPU memory not released {now - start:.1f} s after the "
                    f"repeat: {reason}"
                )
                result.waited_s = now - start
                return result
            time.sleep(min(self.poll_s, deadline - now))

    def _look(
        self, only: Sequence[int] | None = None
    ) -> tuple[list[GpuState] | None, str]:
        try:
            infos = self.pool.members(self.backend.poll())
        except GpuPollError as exc:
            return None, f"GPU poll failed: {exc}"
        if only is not None:
            infos = [i for i in infos if i.index in only]
        return classify(infos, self.own_pids()), ""

    def _clean_stale(
        self, states: list[GpuState], result: GateResult, tried: set[int]
    ) -> bool:
        """End our own leftovers on pool GPUs; True when something was ended."""
        stale = sorted({p.pid for s in states for p in s.ours} - tried)
        if not stale:
            return False
        # terminate() signals only our live descendants; a pid it refuses is
        # not retried and keeps its GPU busy like any other holder.
        tried.update(stale)
        ended = procs.terminate(stale, self.grace_s)
        result.cleaned += ended
        if ended:
            self._say(f"ended stale process(es) {_pids(ended)} of this calibration")
        return bool(ended)

    def _choose(
        self, states: list[GpuState], count: int
    ) -> tuple[list[int] | None, str]:
        free = [s.index for s in states if s.free(self.free_mib)]
        busy = [s.describe(self.free_mib) for s in states if not s.free(self.free_mib)]
        why = "; ".join(busy) if busy else "all free"
        if len(free) < count:
            return None, f"{len(free)} free; {why}"
        chosen = free[:count]
        if self.lease is not None:
            taken = self.lease.take_first(free, count)
            if taken is None:
                others = ", ".join(str(i) for i in self.lease.refused)
                return None, f"GPU(s) {others} leased by another worker; {why}"
            chosen = taken
        # Recheck right before the launch: another user may have just started.
        again, poll_error = self._look(only=chosen)
        if again is None:
            self.release(chosen)
            return None, f"recheck before launch failed: {poll_error}"
        late = [s.describe(self.free_mib) for s in again if not s.free(self.free_mib)]
        if late or len(again) != len(chosen):
            self.release(chosen)
            gone = "; ".join(late) or "a chosen GPU vanished"
            return None, f"recheck before launch failed: {gone}"
        return chosen, ""

    def _say(self, text: str) -> None:
        if self._log is not None:
            self._log(text)


def _add_notes(result: GateResult | CleanupResult, notes: Iterable[str]) -> None:
    for note in notes:
        if note not in result.notes:
            result.notes.append(note)


def _mib(value: int | None) -> str:
    return "? MiB" if value is None else f"{value} MiB"


def _pids(pids: Iterable[int]) -> str:
    return ", ".join(str(p) for p in pids)
