from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pytest_tune_ci.errors import RunError
from pytest_tune_ci.gpu import HostLock
from pytest_tune_ci.gpu import LeaseManager
from pytest_tune_ci.gpu import host_lock


def test_two_managers_never_hold_the_same_gpu(tmp_path: Path) -> None:
    a, b = LeaseManager(tmp_path), LeaseManager(tmp_path)
    assert a.take([0, 1])
    assert (tmp_path / "_locks" / "gpu0.lock").exists()
    assert not b.take([1, 2])
    assert b.refused == [1]
    assert b.held() == []  # all or none: GPU 2 was given back
    assert b.take_first([0, 1, 2, 3], 2) == [2, 3]
    assert b.refused == [0, 1]
    assert a.take_first([2, 3, 4], 1) == [4]
    assert a.held() == [0, 1, 4] and b.held() == [2, 3]
    a.release([1])
    assert b.take([1])
    assert b.leased_elsewhere(0) and not b.leased_elsewhere(5)
    assert not a.leased_elsewhere(0)  # our own lease is not "elsewhere"
    a.close()
    b.close()
    assert LeaseManager(tmp_path).take([0, 1, 2, 3, 4])


def test_take_first_gives_back_partial_sets(tmp_path: Path) -> None:
    a, b = LeaseManager(tmp_path), LeaseManager(tmp_path)
    assert a.take([1])
    assert b.take_first([0, 1, 2], 3) is None
    assert b.held() == []
    assert a.take([0, 2])  # b released what it had taken
    a.close()


def test_take_keeps_leases_already_held(tmp_path: Path) -> None:
    a, b = LeaseManager(tmp_path), LeaseManager(tmp_path)
    assert a.take([0])
    assert b.take([5])
    assert not a.take([0, 5])
    assert a.held() == [0]  # the failed take kept the lease it had before
    a.close()
    b.close()


def test_sigkilled_holder_releases_its_lease(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pytest_tune_ci.gpu import LeaseManager\n"
        "m = LeaseManager(Path(sys.argv[1]))\n"
        "assert m.take([3])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        mine = LeaseManager(tmp_path)
        assert not mine.take([3])
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert mine.take([3])
        mine.close()
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def test_host_lock_shared_and_exclusive(tmp_path: Path) -> None:
    s1, s2, ex = HostLock(tmp_path), HostLock(tmp_path), HostLock(tmp_path)
    assert s1.acquire(exclusive=False, timeout_s=0)
    assert s2.acquire(exclusive=False, timeout_s=0)  # shared holders coexist
    assert (tmp_path / "_locks" / "exclusive.lock").exists()
    assert not ex.acquire(exclusive=True, timeout_s=0.1)
    s1.release()
    s2.release()
    assert ex.acquire(exclusive=True, timeout_s=0)
    assert ex.mode == "exclusive"
    assert not s1.acquire(exclusive=False, timeout_s=0.1)
    with pytest.raises(RunError, match="already held"):
        ex.acquire(exclusive=True)
    ex.release()
    assert s1.acquire(exclusive=False, timeout_s=0) and s1.mode == "shared"
    s1.release()


def test_waiting_exclusive_holder_is_not_starved(tmp_path: Path) -> None:
    first = HostLock(tmp_path)
    assert first.acquire(exclusive=False, timeout_s=0)
    got: list[float] = []

    def exclusive() -> None:
        lock = HostLock(tmp_path)
        if lock.acquire(exclusive=True, timeout_s=5):
            got.append(time.monotonic())
            lock.release()

    waiter = threading.Thread(target=exclusive)
    waiter.start()
    time.sleep(0.2)
    # The exclusive waiter has closed the turnstile: a new shared one waits.
    late = HostLock(tmp_path)
    assert not late.acquire(exclusive=False, timeout_s=0.1)
    first.release()
    waiter.join(timeout=10)
    assert got
    assert late.acquire(exclusive=False, timeout_s=1)
    late.release()


def test_host_lock_context_manager(tmp_path: Path) -> None:
    with host_lock(tmp_path, exclusive=True) as lock:
        assert lock.mode == "exclusive"
        with (
            pytest.raises(
                RunError, match=r"exclusive.lock: no shared host lock after 0.1 s"
            ),
            host_lock(tmp_path, timeout_s=0.1),
        ):
            pass
    assert lock.mode is None
    with host_lock(tmp_path, timeout_s=0):
        pass
