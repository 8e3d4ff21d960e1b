from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_tune_ci import atomic
from pytest_tune_ci import procs
from pytest_tune_ci.errors import TuneError
from pytest_tune_ci.gpu import Backend
from pytest_tune_ci.gpu import Gate
from pytest_tune_ci.gpu import GpuInfo
from pytest_tune_ci.gpu import GpuPollError
from pytest_tune_ci.gpu import GpuPool
from pytest_tune_ci.gpu import GpuProcess
from pytest_tune_ci.gpu import LeaseManager
from pytest_tune_ci.gpu import make_backend


def fast_gate(
    backend: Backend,
    pool: GpuPool | None = None,
    *,
    wait_s: float = 1.0,
    lease: LeaseManager | None = None,
) -> Gate:
    """A gate that polls every 50 ms; the pool is read from the environment."""
    pool = GpuPool.from_env() if pool is None else pool
    return Gate(backend, pool, wait_s=wait_s, poll_s=0.05, grace_s=2.0, lease=lease)


def sim_gpu(
    index: int, used: int = 512, procs_: Sequence[tuple[int, int]] = ()
) -> dict[str, Any]:
    return {
        "index": index,
        "name": "NVIDIA H20",
        "memory_total_mib": 97871,
        "memory_used_mib": used,
        "processes": [{"pid": pid, "used_mib": mib} for pid, mib in procs_],
    }


class Sim:
    """A sim file the test rewrites; ``backend`` reads it at every poll."""

    def __init__(self, path: Path, gpus: list[dict[str, Any]]) -> None:
        self.path = path
        self.write(gpus)
        self.backend = make_backend(f"sim:{path}")

    def write(self, gpus: list[dict[str, Any]]) -> None:
        atomic.write_json(self.path, {"gpus": gpus})


@pytest.fixture
def no_outer_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


# -- helpers for real processes

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def _subreaper(value: int | None = None) -> bool:
    """Read (or set) this process's child-subreaper flag."""
    libc = ctypes.CDLL(None, use_errno=True)
    if value is not None:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, value, 0, 0, 0)
    flag = ctypes.c_int(0)
    libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    return bool(flag.value)


@pytest.fixture
def foreign_pid() -> Iterator[int]:
    """A real process outside our tree (its parent shell exits at once)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("needs Linux re-parenting")
    # An orphan goes to the nearest subreaper above it; if that were us, the
    # process would stay our descendant, so the flag is off while it orphans.
    was = _subreaper()
    if was:
        _subreaper(0)
    try:
        done = subprocess.run(
            ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
            capture_output=True,
            text=True,
            check=True,
            start_new_session=True,
        )
    finally:
        if was:
            _subreaper(1)
    pid = int(done.stdout.strip())
    assert procs.pid_alive(pid)
    assert pid not in procs.descendants(), "helper must be outside our tree"
    yield pid
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def own_child() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


# -- before an attempt


def test_stale_process_of_the_calibration_is_cleaned_and_repeat_starts(
    tmp_path: Path, own_child: subprocess.Popen[bytes], no_outer_devices: None
) -> None:
    assert own_child.pid in procs.descendants()
    sim = Sim(tmp_path / "sim.json", [sim_gpu(0, 17920, [(own_child.pid, 17408)])])
    gate = fast_gate(sim.backend, wait_s=5)
    result = gate.before_attempt(1)
    assert result.ok, result.reason
    assert result.gpus == [0] and result.cuda_visible_devices == "0"
    assert result.cleaned == [own_child.pid]
    assert own_child.wait(timeout=5) is not None


def test_foreign_process_is_never_signalled_and_gate_times_out(
    tmp_path: Path, foreign_pid: int, no_outer_devices: None
) -> None:
    sim = Sim(tmp_path / "sim.json", [sim_gpu(0, 17920, [(foreign_pid, 17408)])])
    gate = fast_gate(sim.backend, wait_s=0.5)
    start = time.monotonic()
    result = gate.before_attempt(1)
    assert 0.5 <= time.monotonic() - start < 5
    assert result.outcome == "gpu_not_clear" and not result.ok
    assert result.gpus == [] and result.cuda_visible_devices is None
    assert result.cleaned == []
    assert f"foreign pid {foreign_pid} (17408 MiB)" in result.reason
    assert "GPU 0: 17920 of 97871 MiB used (limit 2048 MiB)" in result.reason
    assert result.reason.startswith("no 1 free GPU(s) after 0.")
    assert procs.pid_alive(foreign_pid)


def test_foreign_process_on_one_gpu_the_other_is_chosen(
    tmp_path: Path, foreign_pid: int, no_outer_devices: None
) -> None:
    sim = Sim(
        tmp_path / "sim.json", [sim_gpu(0, 900, [(foreign_pid, 400)]), sim_gpu(1)]
    )
    gate = fast_gate(sim.backend, wait_s=1)
    result = gate.before_attempt(1)
    # A foreign process blocks its GPU even under the memory limit.
    assert result.ok and result.gpus == [1]
    assert procs.pid_alive(foreign_pid)


def test_launch_soon_after_memory_drops(tmp_path: Path, no_outer_devices: None) -> None:
    sim = Sim(tmp_path / "sim.json", [sim_gpu(0, 30000)])
    gate = Gate(sim.backend, GpuPool.from_env(), wait_s=20, poll_s=1.0)
    dropped: list[float] = []

    def drop() -> None:
        time.sleep(0.6)
        sim.write([sim_gpu(0, 100)])
        dropped.append(time.monotonic())

    thread = threading.Thread(target=drop)
    thread.start()
    result = gate.before_attempt(1)
    launched = time.monotonic()
    thread.join()
    assert result.ok and result.gpus == [0]
    assert result.waited_s >= 0.5
    assert launched - dropped[0] < 5  # target < 1.5 s; benchmarked elsewhere


def test_visible_devices_map_through_an_outer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5")
    gpus = [sim_gpu(i) for i in range(8)]
    gpus[2]["memory_used_mib"] = 40000
    sim = Sim(tmp_path / "sim.json", gpus)
    gate = fast_gate(sim.backend, wait_s=1)
    result = gate.before_attempt(2)
    assert result.ok
    assert result.gpus == [3, 5]
    assert result.cuda_visible_devices == "1,2"
    assert result.env == {
        "CUDA_VISIBLE_DEVICES": "1,2",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def test_pool_too_small_fails_at_once(tmp_path: Path, no_outer_devices: None) -> None:
    sim = Sim(tmp_path / "sim.json", [sim_gpu(i) for i in range(4)])
    gate = fast_gate(sim.backend, GpuPool.from_env(exclude=[0, 1, 2]), wait_s=30)
    start = time.monotonic()
    result = gate.before_attempt(2)
    assert time.monotonic() - start < 5
    assert result.outcome == "gpu_not_clear"
    assert result.reason == (
        "needs 2 GPU(s) but the pool (all GPUs minus gpu_exclude 0,1,2) has 1"
    )


def test_excluded_gpus_are_never_chosen(tmp_path: Path, no_outer_devices: None) -> None:
    sim = Sim(tmp_path / "sim.json", [sim_gpu(i) for i in range(4)])
    gate = fast_gate(sim.backend, GpuPool.from_env(exclude=[0, 2]), wait_s=1)
    assert gate.before_attempt(2).gpus == [1, 3]


def test_own_pytest_memory_is_reported_not_waited_on(
    tmp_path: Path, no_outer_devices: None
) -> None:
    sim = Sim(tmp_path / "sim.json", [sim_gpu(0, 30512, [(os.getpid(), 30000)])])
    gate = fast_gate(sim.backend, wait_s=5)
    result = gate.before_attempt(1)
    assert result.ok and result.gpus == [0] and result.cleaned == []
    assert result.notes == [
        "GPU 0: the calibrating pytest process itself holds 30000 MiB "
        "(not counted as busy)"
    ]


class Scripted:
    """A backend that returns one scripted poll after another (the last repeats)."""

    name = "scripted"
    enabled = True
    notice = None

    def __init__(self, *polls: list[GpuInfo] | Exception) -> None:
        self.polls = list(polls)
        self.count = 0

    def poll(self) -> list[GpuInfo]:
        step = self.polls[min(self.count, len(self.polls) - 1)]
        self.count += 1
        if isinstance(step, Exception):
            raise step
        return step

    def driver_version(self) -> str | None:
        return "1.0"


def gpu_info(index: int, used: int = 0, *procs_: GpuProcess) -> GpuInfo:
    return GpuInfo(index, "G", 80000, used, tuple(procs_))


def test_own_pytest_with_unknown_usage_does_not_block() -> None:
    backend = Scripted([gpu_info(0, 60000, GpuProcess(os.getpid(), None))])
    gate = fast_gate(backend, GpuPool(), wait_s=1)
    result = gate.before_attempt(1)
    assert result.ok and result.gpus == [0]
    assert "holds ? MiB" in result.notes[0]


def test_recheck_before_launch_catches_a_late_arrival() -> None:
    free = [gpu_info(0), gpu_info(1)]
    late = [gpu_info(0, 9000), gpu_info(1)]
    # poll 1 picks GPU 0, the recheck sees it taken, the next round picks 1.
    backend = Scripted(free, late, late, late)
    gate = fast_gate(backend, GpuPool(), wait_s=2)
    result = gate.before_attempt(1)
    assert result.ok and result.gpus == [1]
    assert backend.count == 4


def test_failed_polls_become_the_reason() -> None:
    backend = Scripted(GpuPollError("sim.json: gpus[0].index: missing"))
    gate = fast_gate(backend, GpuPool(), wait_s=0.3)
    result = gate.before_attempt(1)
    assert result.outcome == "gpu_not_clear"
    assert result.reason.endswith("GPU poll failed: sim.json: gpus[0].index: missing")


def test_malformed_sim_mid_run_then_fixed(
    tmp_path: Path, no_outer_devices: None
) -> None:
    sim = Sim(tmp_path / "sim.json", [sim_gpu(0)])
    sim.path.write_text("{broken")
    gate = fast_gate(sim.backend, wait_s=10)

    def fix() -> None:
        time.sleep(0.3)
        sim.write([sim_gpu(0)])

    thread = threading.Thread(target=fix)
    thread.start()
    result = gate.before_attempt(1)
    thread.join()
    assert result.ok and result.gpus == [0]


def test_gate_off_lets_everything_through() -> None:
    gate = fast_gate(make_backend("none"), GpuPool())
    result = gate.before_attempt(4)
    assert result.ok and result.gpus == [] and result.env == {}
    assert result.cuda_visible_devices is None
    assert result.notes == ["GPU gate off (gpus=none)"]
    assert gate.after_repeat([], set()).ok


def test_zero_gpus_hides_every_gpu() -> None:
    gate = fast_gate(Scripted([gpu_info(0)]), GpuPool())
    result = gate.before_attempt(0)
    assert result.ok and result.cuda_visible_devices == ""


def test_bad_arguments() -> None:
    with pytest.raises(TuneError, match="poll interval must be > 0 s"):
        Gate(Scripted([]), GpuPool(), poll_s=0)
    with pytest.raises(TuneError, match="gpus_per_test must be >= 0"):
        Gate(Scripted([]), GpuPool()).before_attempt(-1)


# -- leases


def test_two_workers_never_choose_the_same_gpu(
    tmp_path: Path, no_outer_devices: None
) -> None:
    sim = Sim(tmp_path / "sim.json", [sim_gpu(i) for i in range(4)])
    run_dir = tmp_path / "run"
    gates = [
        fast_gate(sim.backend, wait_s=0.3, lease=LeaseManager(run_dir))
        for _ in range(3)
    ]
    first, second = gates[0].before_attempt(2), gates[1].before_attempt(2)
    assert first.gpus == [0, 1] and second.gpus == [2, 3]
    third = gates[2].before_attempt(2)
    assert third.outcome == "gpu_not_clear"
    assert "leased by another worker" in third.reason
    assert gates[0].after_repeat(first.gpus, set()).ok  # releases the lease
    assert gates[2].before_attempt(2).gpus == [0, 1]


def test_failed_recheck_gives_the_lease_back(tmp_path: Path) -> None:
    lease = LeaseManager(tmp_path)
    backend = Scripted([gpu_info(0)], [gpu_info(0, 9000)])
    gate = fast_gate(backend, GpuPool(), wait_s=0.2, lease=lease)
    assert not gate.before_attempt(1).ok
    assert lease.held() == []


# -- after a repeat


def test_after_repeat_ends_the_repeats_leftover_process(
    tmp_path: Path, own_child: subprocess.Popen[bytes], no_outer_devices: None
) -> None:
    sim = Sim(tmp_path / "sim.json", [sim_gpu(0, 20512, [(own_child.pid, 20000)])])
    lease = LeaseManager(tmp_path / "run")
    gate = fast_gate(sim.backend, wait_s=5, lease=lease)
    assert lease.take([0])
    result = gate.after_repeat([0], {own_child.pid})
    assert result.ok, result.reason
    assert result.terminated == [own_child.pid]
    assert own_child.wait(timeout=5) is not None
    assert lease.held() == []


def test_after_repeat_waits_for_memory_and_never_signals_foreign(
    tmp_path: Path, foreign_pid: int, no_outer_devices: None
) -> None:
    sim = Sim(tmp_path / "sim.json", [sim_gpu(0, 17920, [(foreign_pid, 17408)])])
    lease = LeaseManager(tmp_path / "run")
    gate = fast_gate(sim.backend, wait_s=0.4, lease=lease)
    assert lease.take([0])
    # The repeat started it, but it left our tree: still not ours to signal.
    result = gate.after_repeat([0], {foreign_pid})
    assert not result.ok
    assert result.terminated == []
    assert [(h.gpu, h.pid, h.used_mib) for h in result.foreign] == [
        (0, foreign_pid, 17408)
    ]
    assert result.reason.startswith("GPU memory not released 0.")
    assert f"foreign pid {foreign_pid} (17408 MiB)" in result.reason
    assert result.notes == [
        f"pid {foreign_pid} was started by the repeat but left this process tree; "
        "not signalled"
    ]
    assert procs.pid_alive(foreign_pid)
    assert lease.held() == []


def test_after_repeat_returns_once_memory_is_back(
    tmp_path: Path, no_outer_devices: None
) -> None:
    sim = Sim(tmp_path / "sim.json", [sim_gpu(0, 40000), sim_gpu(1, 40000)])
    gate = fast_gate(sim.backend, wait_s=10)

    def release() -> None:
        time.sleep(0.3)
        sim.write([sim_gpu(0, 100), sim_gpu(1, 40000)])

    thread = threading.Thread(target=release)
    thread.start()
    result = gate.after_repeat([0], set())  # GPU 1 is not ours to wait for
    thread.join()
    assert result.ok and 0.2 < result.waited_s < 5
