"""Watch a running attempt and end it when it crashed, stalled or overran.

A thread polls the attempt's captured output and the log files the config
names (globs under the basetemp). When a crash signature appears, nothing is
written for the stall time, or the attempt timeout passes, it asks the main
thread to abort (the caller's ``abort`` callable raises there) and ends the
processes the attempt started, so a hung test is cut short within a poll or
two instead of hanging until someone notices.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import procs
from .classify import CRASH
from .classify import TIMEOUT
from .classify import Signatures


_TAIL = 4096  # bytes of earlier text kept so a line split across polls matches


@dataclass(frozen=True)
class Fired:
    outcome: str
    reason: str
    at: float  # time.monotonic() when it fired


class Watchdog:
    def __init__(
        self,
        *,
        signatures: Signatures,
        basetemp: Path,
        log_globs: list[str],
        peek: Callable[[], str],
        abort: Callable[[str], None],
        baseline_pids: set[int],
        timeout_s: float | None = None,
        stall_s: float | None = None,
        poll_s: float = 0.2,
        grace_s: float = 0.5,
    ) -> None:
        self.signatures = signatures
        self.basetemp = basetemp
        self.log_globs = log_globs
        self.peek = peek
        self.abort = abort
        self.baseline_pids = baseline_pids
        self.timeout_s = timeout_s
        self.stall_s = stall_s
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.fired: Fired | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="tune-ci-watchdog", daemon=True
        )
        self._offsets: dict[Path, int] = {}
        self._tails: dict[str, str] = {}
        self._last_capture = ""

    def start(self) -> None:
        self._started = time.monotonic()
        self._last_output = self._started
        self._thread.start()

    def stop(self) -> Fired | None:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.fired

    # -- polling -------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.fired is None:
                hit = self._check()
                if hit is not None:
                    self.fired = Fired(hit[0], hit[1], time.monotonic())
                    self._cut_short(hit[1])
            else:
                # Keep ending what the attempt starts while it winds down.
                self._end_processes(grace_s=1.0)

    def _check(self) -> tuple[str, str] | None:
        now = time.monotonic()
        grew = False
        capture = self.peek()
        if capture != self._last_capture:
            grew = True
            new = capture
            if capture.startswith(self._last_capture):
                new = capture[len(self._last_capture) :]
            self._last_capture = capture
            hit = self._scan("capture", new)
            if hit:
                return CRASH, f"crash signature in output: {hit}"
        for path in self._log_files():
            text = self._read_new(path)
            if text:
                grew = True
                hit = self._scan(str(path), text)
                if hit:
                    rel = path.relative_to(self.basetemp)
                    return CRASH, f"crash signature in {rel}: {hit}"
        if grew:
            self._last_output = now
        if self.timeout_s is not None and now - self._started > self.timeout_s:
            return TIMEOUT, f"attempt timeout of {self.timeout_s:g}s passed"
        if self.stall_s is not None and now - self._last_output > self.stall_s:
            return TIMEOUT, f"no output for {self.stall_s:g}s (stall)"
        return None

    def _scan(self, key: str, text: str) -> str | None:
        joined = self._tails.get(key, "") + text
        self._tails[key] = joined[-_TAIL:]
        return self.signatures.search(joined)

    def _log_files(self) -> list[Path]:
        found: list[Path] = []
        for pattern in self.log_globs:
            with contextlib.suppress(OSError, ValueError):
                found.extend(p for p in self.basetemp.glob(pattern) if p.is_file())
        return sorted(set(found))

    def _read_new(self, path: Path) -> str:
        offset = self._offsets.get(path, 0)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(1 << 20)
        except OSError:
            return ""
        self._offsets[path] = offset + len(data)
        return data.decode("utf-8", errors="replace")

    # -- ending the attempt ----------------------------------------------------

    def _cut_short(self, reason: str) -> None:
        self.abort(reason)
        # Give the test a moment to unwind through its own teardown, then end
        # whatever the attempt started that is still running.
        if not self._stop.wait(self.grace_s):
            self._end_processes(grace_s=2.0)

    def _end_processes(self, grace_s: float) -> None:
        started = procs.descendants() - self.baseline_pids
        if started:
            procs.terminate(started, grace_s=grace_s)
