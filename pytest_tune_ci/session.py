"""The calibration session: plans the run and owns pytest's run loop.

Registered by the entry module only when a calibration was asked for. In a
serial run it replaces ``pytest_runtestloop``; under pytest-xdist each worker
runs the same loop over the stage-runs it claims, and the controller only
plans, watches and reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from . import atomic
from . import classify
from . import gitinfo
from . import harvest
from . import planning
from . import procs
from . import rundir
from .config import load_config_file
from .coordination import Coordinator
from .errors import TuneError
from .runner import AttemptResult
from .runner import Runner
from .runner import Unit
from .runner import parse_extra_args
from .runner import utcnow
from .settings import Settings
from .stages import Stage
from .stages import load_stages


WORKERINPUT_KEY = "tune_ci_run_dir"


def _stem(test: str) -> str:
    return Path(test).stem


class CalibrationPlugin:
    """One calibration: serial, an xdist controller, or an xdist worker.

    The controller (or the serial session) owns the plan, the terminal lines,
    the report and the exit code; every process that runs tests claims
    stage-runs through the run directory and writes their records itself.
    """

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.rootdir = config.rootpath
        workerinput = getattr(config, "workerinput", None)
        self.worker_id: str = (
            str(workerinput["workerid"]) if workerinput is not None else "main"
        )
        self.is_worker = workerinput is not None
        self.is_controller = not self.is_worker and _xdist_active(config)
        self.notes: list[str] = []
        self.lines_done: set[str] = set()
        self.units: list[Unit] = []
        self.runner: Runner | None = None
        self.before_item: Callable[[pytest.Item], None] | None = None
        self.halt_reason: str | None = None
        self.durations: list[float] = []
        self.narrowed: list[str] = []
        self.plan: rundir.Plan | None = None
        self._collect_errors: dict[str, str] = {}
        self._worker_items: list[pytest.Item] = []
        self.report_lines: list[str] = []
        self.complete: rundir.Completeness | None = None
        self._done_ok: int | None = None  # complete stage-runs, for the ETA
        self._last_scan = 0.0
        if self.is_worker:
            assert workerinput is not None
            self.run_dir: Path | None = Path(str(workerinput[WORKERINPUT_KEY]))
            self.plan = rundir.read_plan(self.run_dir)
            opened = planning.Opened(
                model=load_config_file(
                    self.run_dir / rundir.CONFIG_SNAPSHOT, self.rootdir
                ),
                stages={
                    k: v
                    for k, v in load_stages(
                        self.run_dir / rundir.STAGES_SNAPSHOT
                    ).items()
                    if k in self.plan.stages
                },
                notes=[],
            )
        elif settings.resume is not None:
            opened = planning.open_resume(settings, self.rootdir)
            self.run_dir = opened.run_dir
            self.plan = opened.plan
        else:
            opened = planning.open_new(settings, self.rootdir)
            self.run_dir = None
        self.opened = opened
        self.model = opened.model
        self.stages = opened.stages
        self.notes.extend(opened.notes)
        self._apply_auto_env()
        if not self.is_controller:
            # Servers that daemonize stay in our tree, so we can end them.
            procs.enable_subreaper()
        if config.args_source != pytest.Config.ArgsSource.ARGS:
            # Nothing named on the command line: collect only what the stages
            # need instead of the whole suite.
            config.args = sorted(str(self.rootdir / t) for t in self._tests())
        self.gpu = Coordinator(
            spec=settings.gpus,
            rootdir=self.rootdir,
            free_mib=self.model.gpu_free_mib,
            wait_s=self.model.gpu_wait_s,
            exclude=list(self.model.gpu_exclude),
            say=self._say,
        )

    # -- planning --------------------------------------------------------------

    def _tests(self) -> set[str]:
        return {stage.test for stage in self.stages.values()}

    def _apply_auto_env(self) -> None:
        overridden = []
        for name, value in self.model.auto_env.items():
            old = os.environ.get(name)
            if old is not None and old != value:
                overridden.append(f"{name} (was {old!r})")
            os.environ[name] = value
        if overridden and not self.is_worker:
            self.notes.append("auto_env overrides " + ", ".join(overridden))

    def _create_plan(self, workers: int) -> None:
        run_dir = self.settings.output_dir or planning.default_run_dir(
            self.settings, self.model.name, self.settings.repeats
        )
        planning.check_new_run_dir(
            run_dir, planning.protected_paths(self.opened, self.rootdir)
        )
        precheck = None
        if not self.settings.skip_precheck:
            precheck, lines = self.gpu.precheck(
                self.model, list(self.stages.values()), run_dir
            )
            if not precheck.get("ok", True):
                for line in lines:
                    self._say(f"precheck: {line}")
                self._precheck_failed(precheck)
        self.plan = planning.create_run(
            run_dir,
            self.opened,
            self.settings,
            self.rootdir,
            workers=workers,
            precheck=precheck,
        )
        self.run_dir = run_dir

    def _build_units(self, items: list[pytest.Item]) -> list[pytest.Item]:
        """Group the collected items by stage test file; return the others."""
        by_test: dict[str, list[pytest.Item]] = {}
        for item in items:
            try:
                rel = item.path.relative_to(self.rootdir).as_posix()
            except ValueError:
                rel = str(item.path)
            by_test.setdefault(rel, []).append(item)
        tests: dict[str, list[Stage]] = {}
        for stage in self.stages.values():
            tests.setdefault(stage.test, []).append(stage)
        units = []
        for test, stages in tests.items():
            basename = Path(test).name
            unit = Unit(
                test=test,
                stem=_stem(test),
                basename=basename,
                stages=stages,
                items=by_test.get(test, []),
                gpus=max(s.gpus for s in stages),
                exclusive=any(s.group in self.model.exclusive_groups for s in stages),
                extra_env={k: v for s in stages for k, v in s.extra_env.items()},
                extra_args=stages[0].pytest_extra_args,
                collect_error=self._collect_errors.get(test),
            )
            units.append(unit)
        wanted = {u.test for u in units}
        self.units = units
        return [i for t, group in by_test.items() if t not in wanted for i in group]

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            nodeid = report.nodeid.split("::")[0]
            self._collect_errors[nodeid] = _short(str(report.longrepr))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        others = self._build_units(list(items))
        if others:
            config.hook.pytest_deselected(items=others)
        kept = [i for u in self.units for i in u.items]
        if not self.is_worker and not self.is_controller:
            self._narrow()
            for unit in self.units:
                # Fail before any GPU time is spent on an argument we cannot apply.
                try:
                    parse_extra_args(config, unit.extra_args, unit.basename)
                except TuneError as exc:
                    raise pytest.UsageError(str(exc)) from None
            # A collect-only run (an IDE discovering tests) plans nothing.
            if self.plan is None and not config.option.collectonly:
                try:
                    self._create_plan(workers=1)
                except TuneError as exc:
                    raise pytest.UsageError(str(exc)) from None
        if self.is_worker:
            # xdist must schedule nothing: this worker claims stage-runs itself.
            self._worker_items = kept
            items[:] = []
        else:
            items[:] = kept

    def _narrow(self) -> None:
        """Drop stages that the command-line selection feeds no item."""
        if self.settings.resume is not None:
            starved = [
                u.test for u in self.units if not u.items and not u.collect_error
            ]
            if starved:
                raise pytest.UsageError(
                    "the resumed plan needs tests that this selection does not "
                    f"collect: {', '.join(starved)}"
                )
            return
        fed = [u for u in self.units if u.items or u.collect_error]
        if len(fed) == len(self.units):
            return
        if not fed:
            raise pytest.UsageError(
                "the test selection feeds none of the selected stages "
                f"({', '.join(self.stages)})"
            )
        keep = {s.key for u in fed for s in u.stages}
        self.narrowed = [k for k in self.stages if k in keep]
        self.units = fed
        self.stages = {k: v for k, v in self.stages.items() if k in keep}
        self.opened.stages = self.stages

    def _precheck_failed(self, pre: dict[str, Any]) -> None:
        failed = [
            f"{c.get('name')}: {c.get('detail')} ({c.get('fix')})"
            for c in pre.get("checks", [])
            if not c.get("ok", True)
        ]
        pytest.exit(
            "tune-ci: precheck failed, nothing was run:\n  " + "\n  ".join(failed),
            returncode=1,
        )

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.is_controller and self.plan is None:
            # No collection happens on the xdist controller: plan from the
            # stages, before the workers start. The plan cannot see what -k,
            # -m or a node id would leave out, so those are refused here.
            opt = self.config.option
            narrowing = [
                flag
                for flag, given in (
                    ("-k", opt.keyword),
                    ("-m", opt.markexpr),
                    ("a node id", any("::" in str(a) for a in self.config.args)),
                )
                if given
            ]
            if narrowing:
                raise pytest.UsageError(
                    f"a calibration with -n cannot be narrowed by "
                    f"{', '.join(narrowing)}; select stages with --tune-stages"
                )
            try:
                self._create_plan(workers=_xdist_workers(self.config))
            except TuneError as exc:
                raise pytest.UsageError(str(exc)) from None
        if self.is_controller:
            self._count_done()

    def _count_done(self) -> None:
        """Read the run dir once; after that the ETA counts what finishes."""
        assert self.run_dir is not None and self.plan is not None
        self._done_ok = rundir.completeness(self.run_dir, self.plan).ok

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        assert self.run_dir is not None
        node.workerinput[WORKERINPUT_KEY] = str(self.run_dir)

    # -- reporting to the user -------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        lines = [
            f"tune-ci: model {self.model.name}, {len(self.stages)} stage(s) x "
            f"{self.plan.repeats if self.plan else self.settings.repeats} repeat(s)"
        ]
        if self.run_dir is not None:
            lines.append(f"tune-ci: run dir {self.run_dir}")
        if self.gpu.notice:
            lines.append(f"tune-ci: {self.gpu.notice}")
        lines.extend(f"tune-ci: {note}" for note in self.notes)
        return lines

    def pytest_report_collectionfinish(self, config: pytest.Config) -> list[str]:
        lines = []
        if self.run_dir is not None:
            lines.append(f"tune-ci: run dir {self.run_dir}")
        if self.narrowed:
            lines.append(
                f"tune-ci: this selection feeds {len(self.narrowed)} stage(s): "
                + ", ".join(self.narrowed)
            )
        return lines

    def _terminal(self) -> Any:
        return self.config.pluginmanager.get_plugin("terminalreporter")

    def _say(self, text: str) -> None:
        if self.run_dir is not None:
            with contextlib.suppress(OSError):
                rundir.append_log(self.run_dir, f"{utcnow()} [{self.worker_id}] {text}")
        tr = self._terminal()
        if tr is not None and not self.is_worker:
            tr.write_line(f"tune-ci: {text}")

    # -- the run loop ----------------------------------------------------------

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.runner is not None:
            self.runner.on_report(report)
        if self.is_controller:
            self._echo_new_stage_runs()

    def calibrate(self, session: pytest.Session) -> None:
        assert self.plan is not None and self.run_dir is not None
        self.runner = Runner(
            self.config,
            session,
            signatures=classify.Signatures.build(self.model.crash_signatures),
            log_globs=list(self.model.watch_logs),
            timeout_s=self.model.attempt_timeout_s,
            stall_s=self.model.stall_timeout_s,
        )
        self.runner.before_item = self.before_item
        self._count_done()
        units = {u.test: u for u in self.units}
        order = [(k, units[t]) for k in range(1, self.plan.repeats + 1) for t in units]
        state = self.run_dir / planning.STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        while True:
            if self._halted() or session.shouldstop:
                return
            ran = waiting = False
            for k, unit in order:
                if self._halted() or session.shouldstop:
                    return
                if self._unit_complete(unit, k):
                    continue
                with self.gpu.claim(state, unit.stem, k) as got:
                    if not got:
                        waiting = True
                        continue
                    if self._unit_complete(unit, k):
                        continue
                    if not self._take_pass(state, unit.stem, k):
                        continue
                    self._run_unit(unit, k)
                    ran = True
            if not ran:
                if not waiting:
                    return
                time.sleep(0.2)

    def _take_pass(self, state: Path, stem: str, k: int) -> bool:
        path = state / f"{stem}_run{k}.passes"
        try:
            used = int(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            used = 0
        if used >= self.settings.max_passes:
            return False
        atomic.write_text(path, str(used + 1))
        if used:
            self._say(
                f"pass {used + 1}/{self.settings.max_passes}: rerun {stem} run {k}"
            )
        return True

    def _halted(self) -> bool:
        if self.halt_reason is not None:
            return True
        assert self.run_dir is not None
        path = self.run_dir / planning.STATE_DIR / "halt.json"
        if path.exists():
            with contextlib.suppress(OSError, ValueError):
                self.halt_reason = str(json.loads(path.read_text())["reason"])
            return True
        return False

    def _unit_complete(self, unit: Unit, k: int) -> bool:
        assert self.run_dir is not None
        for stage in unit.stages:
            record = rundir.read_stage_run(self.run_dir, stage.key, k)
            if record is None or not record.complete:
                return False
        return True

    def _run_unit(self, unit: Unit, k: int) -> None:
        assert self.run_dir is not None and self.plan is not None
        assert self.runner is not None
        todo = [
            s
            for s in unit.stages
            if not ((r := rundir.read_stage_run(self.run_dir, s.key, k)) and r.complete)
        ]
        basetemp = rundir.basetemp_path(self.run_dir, unit.stem, k)
        log = rundir.log_path(self.run_dir, unit.stem, k)
        attempts: list[AttemptResult] = []
        start = time.monotonic()
        started_at = utcnow()
        if unit.collect_error is not None or not unit.items:
            attempts.append(
                AttemptResult(
                    outcome=classify.ERROR,
                    reason=f"collection error: {unit.collect_error or 'no tests'}",
                    started_at=started_at,
                    duration_s=0.0,
                    gpus=[],
                    tests={},
                    failure_text="",
                )
            )
        else:
            for attempt in range(1, self.settings.max_attempts + 1):
                self._activity(unit, k, attempt)
                result = self._attempt(unit, k, attempt, basetemp, log)
                attempts.append(result)
                if result.outcome not in classify.INFRA:
                    break
                if attempt < self.settings.max_attempts:
                    self._say(
                        f"{unit.stem} run {k}/{self.plan.repeats} attempt {attempt}: "
                        f"{result.outcome} ({result.reason}); retrying"
                    )
        last = attempts[-1]
        # The span a stage-run really ran (not its waits for locks or GPUs),
        # so that overlaps between stage-runs mean what they say.
        started_at = attempts[0].started_at or started_at
        finished_at = _plus(last.started_at, last.duration_s) or utcnow()
        duration = round(time.monotonic() - start, 3)
        harvests = {s.key: harvest.harvest(s, basetemp) for s in todo}
        tests_failed = last.outcome == "failed"
        if tests_failed:
            complete = all(
                all(v is not None for v in h.metrics.values())
                for h in harvests.values()
            )
            last.outcome = classify.THRESHOLD if complete else classify.ERROR
        # The commit the tests ran at (HEAD may move during a long run).
        git_sha = gitinfo.head(self.rootdir) if self.plan.git_sha else None
        for stage in todo:
            self._record(
                stage,
                k,
                unit,
                harvests[stage.key],
                attempts,
                started_at,
                finished_at,
                duration,
                basetemp,
                log,
                git_sha,
            )
        self.durations.append(duration)
        if last.outcome == classify.OK:
            missing = [(s, h) for s in todo if (h := harvests[s.key]).missing]
            if missing:
                self._halt(unit, missing)

    def _attempt(
        self, unit: Unit, k: int, attempt: int, basetemp: Path, log: Path
    ) -> AttemptResult:
        assert self.runner is not None and self.run_dir is not None
        env = dict(unit.extra_env)
        env["TUNE_CI_RUN_DIR"] = str(self.run_dir)
        env["TUNE_CI_REPEAT"] = str(k)
        env["TUNE_CI_ATTEMPT"] = str(attempt)
        with self.gpu.lease(unit.gpus, unit.exclusive, self.run_dir) as lease:
            if lease.failed is not None:
                return AttemptResult(
                    outcome=classify.GPU_NOT_CLEAR,
                    reason=lease.failed,
                    started_at=utcnow(),
                    duration_s=lease.waited_s,
                    gpus=[],
                    tests={},
                    failure_text="",
                )
            env.update(lease.env)
            result = self.runner.run(
                unit,
                k=k,
                attempt=attempt,
                basetemp=basetemp,
                log=log,
                env=env,
                gpus=lease.gpus,
            )
        return result

    def _record(
        self,
        stage: Stage,
        k: int,
        unit: Unit,
        result: harvest.Harvest,
        attempts: list[AttemptResult],
        started_at: str,
        finished_at: str,
        duration: float,
        basetemp: Path,
        log: Path,
        git_sha: str | None,
    ) -> None:
        assert self.run_dir is not None and self.plan is not None
        last = attempts[-1]
        problems = list(result.problems) + harvest.completeness_problems(stage, result)
        valid_outcome = last.outcome in (classify.OK, classify.THRESHOLD)
        if last.outcome == classify.ERROR and not result.problems:
            # The tests failed but every value of this stage is there.
            valid_outcome = True
        status = "ok" if valid_outcome and not problems else "incomplete"
        if status == "ok":
            reason = (
                "" if last.outcome == classify.OK else "threshold assertions failed"
            )
        elif last.outcome == classify.ERROR and problems:
            reason = "; ".join(problems) + f" (tests failed: {last.reason})"
        elif not valid_outcome:
            reason = f"{last.outcome}: {last.reason}"
        else:
            reason = "; ".join(problems)
        record = rundir.StageRun(
            stage=stage.key,
            run=k,
            status=status,
            reason=reason,
            outcome=last.outcome,
            metrics=result.metrics,
            sample_counts=result.sample_counts,
            attempts=[
                rundir.Attempt(a.outcome, a.reason, a.duration_s, a.gpus, a.started_at)
                for a in attempts
            ],
            duration_s=duration,
            started_at=started_at,
            finished_at=finished_at,
            git_sha=git_sha,
            test_logic_sha256=self.plan.logic_hashes.get(stage.test, ""),
            basetemp=str(basetemp),
            log=str(log),
            worker=self.worker_id,
            gpus=last.gpus,
            problems=problems,
            tests=last.tests,
        )
        rundir.write_stage_run(self.run_dir, record)
        if not self.is_worker:
            self._echo(record)

    def _halt(self, unit: Unit, missing: list[tuple[Stage, harvest.Harvest]]) -> None:
        assert self.run_dir is not None
        details = []
        for stage, result in missing:
            for problem in result.problems:
                details.append(f"{stage.key}: {problem}")
        source = f"metric_sources.{unit.basename}"
        reason = (
            f"the tests of {unit.test} passed but their results could not be read; "
            f"fix {source} in {self.model.path} (every further repeat would fail the "
            "same way): " + "; ".join(details)
        )
        self.halt_reason = reason
        atomic.write_json(
            self.run_dir / planning.STATE_DIR / "halt.json", {"reason": reason}
        )
        self._say("STOPPED: " + reason)

    def _activity(self, unit: Unit, k: int, attempt: int) -> None:
        assert self.run_dir is not None
        atomic.write_json(
            self.run_dir / planning.STATE_DIR / f"activity-{self.worker_id}.json",
            {
                "worker": self.worker_id,
                "pid": os.getpid(),
                "test": unit.test,
                "stages": [s.key for s in unit.stages],
                "run": k,
                "attempt": attempt,
                "started_at": utcnow(),
            },
        )

    # -- terminal lines for finished stage-runs ---------------------------------

    def _echo(self, record: rundir.StageRun) -> None:
        key = f"{record.stage}#{record.run}"
        if key in self.lines_done:
            return
        self.lines_done.add(key)
        if record.complete:
            self._done_ok = (self._done_ok or 0) + 1
        assert self.plan is not None
        values = " ".join(
            f"{name}={_fmt(value)}" for name, value in list(record.metrics.items())[:4]
        )
        n = len(record.attempts)
        text = (
            f"{record.stage} run {record.run}/{self.plan.repeats} {record.outcome}"
            f"{' ' + values if values else ''} ({n} attempt{'s' if n != 1 else ''})"
        )
        if record.status != "ok":
            text += f" INCOMPLETE: {record.reason}"
        eta = self._eta()
        if eta:
            text += f" [ETA {eta}]"
        self._say(text)

    def _eta(self) -> str:
        assert self.plan is not None and self.run_dir is not None
        if not self.durations:
            return ""
        left = len(self.plan.stages) * self.plan.repeats - (self._done_ok or 0)
        stages_per_unit = max(1, len(self.stages) // max(1, len(self.units)))
        left_units = max(0, left) / stages_per_unit
        seconds = (
            statistics.median(self.durations) * left_units / max(1, self.plan.workers)
        )
        return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}min"

    def _echo_new_stage_runs(self, *, force: bool = False) -> None:
        if self.run_dir is None or self.plan is None:
            return
        # Called for every report a worker forwards: look at most twice a second.
        now = time.monotonic()
        if not force and now - self._last_scan < 0.5:
            return
        self._last_scan = now
        for stage in self.plan.stages:
            for k in range(1, self.plan.repeats + 1):
                if f"{stage}#{k}" in self.lines_done:
                    continue
                record = rundir.read_stage_run(self.run_dir, stage, k)
                if record is not None:
                    self.durations.append(record.duration_s)
                    self._echo(record)

    # -- end of session ----------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker or self.run_dir is None or self.plan is None:
            return
        if self.is_controller:
            self._echo_new_stage_runs(force=True)
        done = rundir.completeness(self.run_dir, self.plan)
        self.complete = done
        if done.complete:
            plan = rundir.read_plan(self.run_dir)
            plan.finished_at = planning.utc_stamp()
            rundir.write_plan(self.run_dir, plan)
            self.report_lines = self._write_report()
        session.exitstatus = 0 if done.complete else 1

    def _write_report(self) -> list[str]:
        assert self.run_dir is not None
        try:
            from .report import write_report
        except ImportError:
            return []
        try:
            result = write_report(self.run_dir)
        except TuneError as exc:
            return [f"report not written: {exc}"]
        return list(result.lines)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or self.run_dir is None or self.plan is None:
            return
        tr = terminalreporter
        tr.write_sep("=", "tune-ci calibration")
        done = self.complete or rundir.completeness(self.run_dir, self.plan)
        tr.write_line(f"run dir: {self.run_dir}")
        tr.write_line(f"complete: {done.ok}/{done.total} stage-runs")
        if self.halt_reason:
            tr.write_line(f"STOPPED: {self.halt_reason}", red=True)
        for missing in done.missing[:20]:
            tr.write_line(
                f"missing: {missing.stage} run {missing.run}: {missing.reason}"
            )
        if len(done.missing) > 20:
            tr.write_line(f"... and {len(done.missing) - 20} more")
        if not done.complete:
            tr.write_line(f"resume with: pytest --tune-resume {self.run_dir}")
        for line in self.report_lines:
            tr.write_line(line)


def _xdist_active(config: pytest.Config) -> bool:
    return (
        bool(getattr(config.option, "numprocesses", None))
        and getattr(config.option, "dist", "no") != "no"
    )


def _xdist_workers(config: pytest.Config) -> int:
    n = getattr(config.option, "numprocesses", 0)
    try:
        return int(n)
    except (TypeError, ValueError):
        return 1


def _plus(stamp: str, seconds: float) -> str | None:
    try:
        start = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    return (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fmt(value: float | None) -> str:
    if value is None:
        return "null"
    return f"{value:.6g}"


def _short(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "collection failed"
