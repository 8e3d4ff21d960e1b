"""Run one repeat of one test file in-process, as a fresh pytest run would.

Isolation, per attempt:
- every fixture scope is torn down at the end (the last item runs with
  ``nextitem=None``), so module-, class-, package- and session-scoped
  fixtures start again in the next repeat;
- ``--basetemp`` and a fresh ``TempPathFactory`` point at
  ``<run-dir>/_pytest/<stem>/basetemp_run{k}``, so ``tmp_path`` numbering
  restarts and result paths mean what they mean under a plain pytest run;
- the environment, the working directory and option values changed by the
  stage's ``pytest_extra_args`` are restored afterwards;
- processes the attempt started and left running are ended.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest

from . import classify
from . import procs
from .errors import TuneError
from .stages import Stage
from .watchdog import Watchdog


class AttemptAborted(Exception):
    """Raised in the test's thread when the watchdog ends an attempt."""


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Unit:
    """One test file and the selected stages it feeds."""

    test: str  # relative to the rootdir
    stem: str
    basename: str
    stages: list[Stage]
    items: list[pytest.Item] = field(default_factory=list)
    gpus: int = 1
    exclusive: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    collect_error: str | None = None


@dataclass
class AttemptResult:
    outcome: str
    reason: str
    started_at: str
    duration_s: float
    gpus: list[int]
    tests: dict[str, int]
    failure_text: str


def parse_extra_args(
    config: pytest.Config, args: list[str], where: str
) -> dict[str, Any]:
    """Option values that ``args`` set, parsed by the session's own parser."""
    if not args:
        return {}
    base = config.option
    namespace = copy.copy(base)
    try:
        parsed, unknown = config._parser.parse_known_and_unknown_args(
            args, namespace=namespace
        )
    except (SystemExit, pytest.UsageError) as exc:
        raise TuneError(f"{where}: {args!r} cannot be parsed: {exc}") from None
    positional = [str(a) for a in (parsed.file_or_dir or [])]
    if unknown or positional:
        bad = unknown + positional
        raise TuneError(
            f"{where}: {bad!r} cannot be applied in-process (expected options "
            "that this pytest session knows, such as a conftest's --concurrency)"
        )
    return {
        name: value
        for name, value in vars(parsed).items()
        if name != "file_or_dir" and getattr(base, name, object()) != value
    }


@contextlib.contextmanager
def _options(config: pytest.Config, values: dict[str, Any]) -> Iterator[None]:
    saved = {name: getattr(config.option, name) for name in values}
    for name, value in values.items():
        setattr(config.option, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(config.option, name, value)


@contextlib.contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    cwd = os.getcwd()
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        with contextlib.suppress(OSError):
            os.chdir(cwd)


@contextlib.contextmanager
def _basetemp(config: pytest.Config, basetemp: Path) -> Iterator[None]:
    from _pytest.tmpdir import TempPathFactory

    saved_opt = config.option.basetemp
    saved_factory = getattr(config, "_tmp_path_factory", None)
    basetemp.parent.mkdir(parents=True, exist_ok=True)
    config.option.basetemp = str(basetemp)
    config._tmp_path_factory = TempPathFactory.from_config(  # type: ignore[attr-defined]
        config, _ispytest=True
    )
    try:
        yield
    finally:
        config.option.basetemp = saved_opt
        if saved_factory is not None:
            config._tmp_path_factory = saved_factory  # type: ignore[attr-defined]


class _Abort:
    """Delivers the watchdog's abort into the main thread as an exception.

    A real signal (not ``_thread.interrupt_main``) is used because it also
    interrupts blocking calls such as ``time.sleep`` or ``Popen.wait``.
    """

    SIGNAL = signal.SIGUSR1

    def __init__(self) -> None:
        self.pending: str | None = None
        self.installed = False
        self._previous: Any = None

    def __enter__(self) -> _Abort:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.SIGNAL, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            signal.signal(self.SIGNAL, self._previous)
            self.installed = False
        self.pending = None

    def _handle(self, signum: int, frame: object) -> None:
        reason, self.pending = self.pending, None
        if reason is not None:
            raise AttemptAborted(reason)

    def request(self, reason: str) -> None:
        self.pending = reason
        if self.installed:
            signal.pthread_kill(threading.main_thread().ident or 0, self.SIGNAL)


def _capture_peek(config: pytest.Config) -> Callable[[], str]:
    """Read what the running test printed so far, without consuming it.

    pytest exposes no public API for this: the capture manager's global
    capture keeps the current phase's output in temp files, which are read
    here with ``pread`` so pytest's own file position is untouched.
    """
    capman = config.pluginmanager.getplugin("capturemanager")

    def peek() -> str:
        capturing = getattr(capman, "_global_capturing", None)
        chunks: list[str] = []
        for stream in (
            getattr(capturing, "out", None),
            getattr(capturing, "err", None),
        ):
            tmpfile = getattr(stream, "tmpfile", None)
            if tmpfile is None:
                continue
            try:
                if hasattr(tmpfile, "getvalue"):
                    chunks.append(str(tmpfile.getvalue()))
                else:
                    fd = tmpfile.fileno()
                    size = os.fstat(fd).st_size
                    data = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
                    chunks.append(data.decode("utf-8", errors="replace"))
            except (OSError, ValueError):
                continue
        return "\n".join(chunks)

    return peek


class Runner:
    """Runs attempts; the session plugin feeds it pytest's reports."""

    def __init__(
        self,
        config: pytest.Config,
        session: pytest.Session,
        *,
        signatures: classify.Signatures,
        log_globs: list[str],
        timeout_s: float | None,
        stall_s: float | None,
    ) -> None:
        self.config = config
        self.session = session
        self.signatures = signatures
        self.log_globs = log_globs
        self.timeout_s = timeout_s
        self.stall_s = stall_s
        self._log: Any = None
        self._nodeids: set[str] = set()
        self._tests: dict[str, int] = {}
        self._failures: list[str] = []
        # Called with each item before it runs (xdist's worker needs to know).
        self.before_item: Callable[[pytest.Item], None] | None = None

    # pytest_runtest_logreport is forwarded here while an attempt runs.
    def on_report(self, report: pytest.TestReport) -> None:
        if report.nodeid not in self._nodeids:
            return
        if report.when == "call" or report.outcome != "passed":
            key = (
                report.outcome
                if report.when == "call"
                else f"{report.when} {report.outcome}"
            )
            self._tests[key] = self._tests.get(key, 0) + 1
        text = []
        for title, content in report.sections:
            text.append(f"----- {title} -----\n{content}")
        if report.failed:
            longrepr = str(report.longrepr)
            text.append(longrepr)
            self._failures.append(longrepr)
            self._failures.extend(c for _t, c in report.sections)
        if self._log is not None:
            self._log.write(
                f"{report.nodeid} {report.when} {report.outcome} "
                f"({report.duration:.2f}s)\n"
            )
            for chunk in text:
                self._log.write(chunk.rstrip("\n") + "\n")
            self._log.flush()

    def run(
        self,
        unit: Unit,
        *,
        k: int,
        attempt: int,
        basetemp: Path,
        log: Path,
        env: dict[str, str],
        gpus: list[int],
    ) -> AttemptResult:
        started_at = utcnow()
        start = time.monotonic()
        self._nodeids = {item.nodeid for item in unit.items}
        self._tests = {}
        self._failures = []
        args = parse_extra_args(self.config, unit.extra_args, unit.basename)
        baseline = procs.descendants()
        log.parent.mkdir(parents=True, exist_ok=True)
        fired = None
        aborted = None
        with open(log, "a", encoding="utf-8") as self._log:
            self._log.write(f"===== run {k} attempt {attempt} started {started_at}\n")
            self._log.flush()
            with (
                _Abort() as abort,
                _environment(env),
                _options(self.config, args),
                _basetemp(self.config, basetemp),
            ):
                dog = Watchdog(
                    signatures=self.signatures,
                    basetemp=basetemp,
                    log_globs=self.log_globs,
                    peek=_capture_peek(self.config),
                    abort=abort.request,
                    baseline_pids=baseline,
                    timeout_s=self.timeout_s,
                    stall_s=self.stall_s,
                )
                dog.start()
                try:
                    aborted = self._run_items(unit.items)
                finally:
                    fired = dog.stop()
                    abort.pending = None
            leftover = procs.descendants() - baseline
            if leftover:
                ended = procs.terminate(leftover)
                self._log.write(f"ended leftover processes of this attempt: {ended}\n")
            outcome, reason = self._classify(fired, aborted)
            self._log.write(f"===== outcome {outcome}: {reason}\n")
        self._log = None
        self._nodeids = set()
        return AttemptResult(
            outcome=outcome,
            reason=reason,
            started_at=started_at,
            duration_s=round(time.monotonic() - start, 3),
            gpus=gpus,
            tests=dict(self._tests),
            failure_text="\n".join(self._failures),
        )

    def _run_items(self, items: list[pytest.Item]) -> str | None:
        """Run the items; the abort reason when the watchdog cut them short."""
        for item in items:
            # pytest keeps captured sections on the item across runs.
            item._report_sections.clear()
        hook = self.config.hook
        aborted: str | None = None
        try:
            for index, item in enumerate(items):
                nextitem = items[index + 1] if index + 1 < len(items) else None
                if self.before_item is not None:
                    self.before_item(item)
                hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
                if self._was_aborted():
                    aborted = "aborted"
                    break
                if self.session.shouldstop:
                    break
        except AttemptAborted as exc:
            aborted = str(exc)
        finally:
            if aborted is not None or self.session.shouldstop:
                self._teardown_all()
        return aborted

    def _was_aborted(self) -> bool:
        return any("AttemptAborted" in text for text in self._failures)

    def _teardown_all(self) -> None:
        # Items after the aborted one never ran: tear every scope down now, as
        # the last item of a repeat would have.
        setupstate = self.session._setupstate
        for _ in range(3):
            try:
                setupstate.teardown_exact(None)
                return
            except AttemptAborted:
                continue
            except Exception:  # a failing teardown is already in the log
                return

    def _classify(self, fired: Any, aborted: str | None) -> tuple[str, str]:
        if fired is not None:
            return fired.outcome, fired.reason
        text = "\n".join(self._failures)
        failed = any(
            not k.endswith("passed") and "skipped" not in k for k in self._tests
        )
        if failed or aborted:
            found = classify.classify_text(text)
            if found is not None:
                return found[0], f"{found[0]}: {found[1]}"
            return "failed", _first_line(text) or "tests failed"
        return classify.OK, ""


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("E "):
            return line[2:].strip()[:300]
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""
