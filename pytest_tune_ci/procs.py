"""The calibration's own processes: find them, and end them, and nothing else.

A repeat owns the processes that appear below the calibrating pytest process
while it runs. The process is made a *child subreaper* (Linux), so a server
that daemonizes itself is re-parented to us instead of to init and stays in
our tree, where we can still find and end it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Iterable

import psutil


_PR_SET_CHILD_SUBREAPER = 36


def enable_subreaper() -> bool:
    """Adopt orphaned descendants (Linux only); True when it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def descendants(root: int | None = None) -> set[int]:
    """Live (non-zombie) descendant pids of ``root`` (default: this process)."""
    try:
        proc = psutil.Process(root if root is not None else os.getpid())
        children = proc.children(recursive=True)
    except psutil.Error:
        return set()
    alive: set[int] = set()
    for child in children:
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.add(child.pid)
    return alive


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def in_tree(pid: int, root: int | None = None) -> bool:
    """Whether ``pid`` is ``root`` itself or one of its descendants."""
    root_pid = root if root is not None else os.getpid()
    if pid == root_pid:
        return True
    return pid in descendants(root_pid)


def terminate(pids: Iterable[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM the given processes, then SIGKILL what is left after ``grace_s``.

    Only the pids passed in are signalled, and only while they are still our
    descendants: a pid that was recycled by an unrelated process in the
    meantime is left alone. Returns the pids that were signalled.
    """
    mine = descendants()
    procs: list[psutil.Process] = []
    for pid in sorted(set(pids) & mine):
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    if not procs:
        return []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _gone, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=2.0)
    reap_zombies()
    return [p.pid for p in procs]


def reap_zombies() -> None:
    """Collect exit statuses of dead children nobody waits for.

    Only children whose state is already zombie are reaped, so a ``Popen``
    that a test still holds keeps working (it gets ECHILD and treats the
    child as exited, which it is).
    """
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)


def wait_gone(pids: Iterable[int], timeout_s: float) -> set[int]:
    """Wait until the given pids are gone; return the ones still alive."""
    deadline = time.monotonic() + timeout_s
    left = {p for p in pids if pid_alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {p for p in left if pid_alive(p)}
    return left
