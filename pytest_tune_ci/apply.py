"""Apply a calibration: the apply plan, the review, and writing the thresholds.

Reads only the run directory (report.json, plan.json, the stages.yaml
snapshot) and the files as they are now; no test runs. The current values
and directions are re-read from the files' AST, so a second apply of the same
run finds every direction ``equal`` and writes nothing. The values are written
by :mod:`rewrite`, literal by literal.

Modes: ``report`` writes only ``DIR/apply.patch`` (what ``full`` would do);
``full`` writes every tightening and loosening; ``smart`` writes speed
tightenings and asks about everything else, on a terminal, or takes the
answer from ``--tune-apply-answers`` (which may also override an automatic
tightening); without either the threshold is kept and listed. The answers
file is read in smart mode only. A custom value tighter than the worst run
needs a second "yes" on a terminal; from a file it is taken, with a note.
Two stages sharing one literal get the looser of their two values.

Refusals: problems with the run or the files raise :class:`RunError` (an
incomplete or PARTIAL run, a missing report, files whose logic changed since
calibration, a threshold the file no longer has), for the plan too; bad input
raises :class:`TuneError`/:class:`ConfigError` (an unknown mode, a bad
answers file). A file that does not read back as planned is restored and the
exit code is 1; the other files are still written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any
from typing import Literal

from . import atomic
from . import literals
from . import logic
from . import rewrite
from . import rundir
from . import stats
from .errors import ConfigError
from .errors import RunError
from .errors import TuneError
from .errors import closest
from .literals import Number
from .settings import APPLY_MODES
from .stages import Location
from .stages import Stage
from .stages import Worst


PATCH = "apply.patch"
ACTIONABLE = ("tightens", "loosens")
Out = Callable[[str], None]
Action = Literal["apply", "keep"]


# -- the plan ---------------------------------------------------------------


@dataclass
class PlannedMetric:
    stage_key: str
    metric_key: str
    group: str
    stage_group: str
    location: Location
    worst_op: Worst
    label: str
    digits: int
    scale: float
    integer: bool
    per_run_raw: list[float]
    worst_raw: float | None
    write_value: Number | None
    current_raw: Number | None
    direction: str
    delta_pct: float | None
    policy: str | None
    false_alarm_current: dict[str, Any] | None
    false_alarm_new: dict[str, Any] | None
    flags: list[str] = field(default_factory=list)

    @property
    def threshold_id(self) -> str:
        return f"{self.stage_key}.{self.metric_key}"

    @property
    def actionable(self) -> bool:
        return self.direction in ACTIONABLE

    def to_json(self) -> dict[str, Any]:
        loc = self.location
        worst_rounded = None
        if self.worst_raw is not None:
            worst_rounded = round(self.worst_raw, self.digits)
        return {
            "stage_key": self.stage_key,
            "metric_key": self.metric_key,
            "threshold_id": self.threshold_id,
            "label": self.label,
            "group": self.group,
            "stage_group": self.stage_group,
            "source": loc.source,
            "source_kind": "bare" if loc.inner_key is None else "nested",
            "symbol": loc.symbol,
            "subkey": loc.inner_key,
            "concurrency": loc.outer_key,
            "file": loc.file,
            "line": loc.line,
            "worst_op": self.worst_op,
            "digits": self.digits,
            "scale": self.scale,
            "integer": self.integer,
            "per_run_raw": self.per_run_raw,
            "worst_raw": self.worst_raw,
            "worst_rounded": worst_rounded,
            "write_value": self.write_value,
            "current_raw": self.current_raw,
            "direction": self.direction,
            "delta_pct": self.delta_pct,
            "policy": self.policy,
            "false_alarm_current": self.false_alarm_current,
            "false_alarm_new": self.false_alarm_new,
            "flags": self.flags,
        }


@dataclass
class PlannedStage:
    stage_key: str
    test: str
    title: str
    group: str
    concurrency: Any
    threshold_file: str | None
    variant: str | None
    metrics: list[PlannedMetric]

    def to_json(self) -> dict[str, Any]:
        return {
            "stage_key": self.stage_key,
            "test": self.test,
            "title": self.title,
            "stage_group": self.group,
            "concurrency": self.concurrency,
            "threshold_file": self.threshold_file,
            "variant": self.variant,
            "metrics": [m.to_json() for m in self.metrics],
        }


@dataclass
class ApplyPlan:
    model: str
    run_dir: str
    repeats: int
    git_sha: str | None
    stages: list[PlannedStage]

    def metrics(self) -> Iterator[PlannedMetric]:
        for stage in self.stages:
            yield from stage.metrics

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "model": self.model,
            "run_dir": self.run_dir,
            "repeats": self.repeats,
            "git_sha": self.git_sha,
            "stages": [s.to_json() for s in self.stages],
        }


def build_plan(run_dir: Path, rootdir: Path) -> dict[str, Any]:
    """The apply-plan JSON of ``run_dir`` (``pytest --tune-apply-plan DIR``)."""
    return make_plan(run_dir, rootdir).to_json()


def make_plan(run_dir: Path, rootdir: Path) -> ApplyPlan:
    """Read the run, refuse it when it cannot be applied, read current values."""
    plan, report, snapshot = _load_run(run_dir)
    sources = _Sources(rootdir)
    stages = [_plan_stage(s, snapshot, sources) for s in _list(report, "stages")]
    _check_files(plan, snapshot, stages, sources)
    return ApplyPlan(
        model=str(report.get("model") or plan.model),
        run_dir=str(run_dir),
        repeats=int(report.get("repeats") or plan.repeats),
        git_sha=plan.git_sha,
        stages=stages,
    )


def _load_run(run_dir: Path) -> tuple[rundir.Plan, dict[str, Any], dict[str, Stage]]:
    from .stages import load_stages

    plan = rundir.read_plan(run_dir)
    done = rundir.completeness(run_dir, plan)
    if not done.complete:
        first = ", ".join(f"{m.stage}#{m.run} ({m.reason})" for m in done.missing[:3])
        more = f" and {len(done.missing) - 3} more" if len(done.missing) > 3 else ""
        raise RunError(
            f"{run_dir}: the run is incomplete ({done.ok}/{done.total} stage-runs "
            f"complete; missing {first}{more}); finish it with "
            f"pytest --tune-resume {run_dir}"
        )
    path = run_dir / rundir.REPORT_JSON
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(
            f"{path}: no report yet; write it with pytest --tune-report {run_dir}"
        ) from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable report ({exc})") from None
    if not isinstance(report, dict):
        raise RunError(f"{path}: expected a JSON object")
    if report.get("partial"):
        raise RunError(
            f"{path}: the report is PARTIAL; a partial run is never applied. "
            f"Re-run pytest --tune-report {run_dir} now that the run is complete"
        )
    covered = {
        str(s.get("stage_key"))
        for s in report.get("stages") or []
        if isinstance(s, dict)
    }
    uncovered = [key for key in plan.stages if key not in covered]
    if uncovered:
        raise RunError(
            f"{path}: the report does not cover the planned stage(s) "
            f"{', '.join(uncovered)}; re-write it with pytest --tune-report {run_dir}"
        )
    snapshot_path = run_dir / rundir.STAGES_SNAPSHOT
    if not snapshot_path.exists():
        raise RunError(f"{snapshot_path}: missing; not a complete calibration run dir")
    return plan, report, load_stages(snapshot_path)


class _Sources:
    """The files as they are now, read and parsed once each."""

    def __init__(self, rootdir: Path) -> None:
        self.rootdir = rootdir
        self._cache: dict[str, tuple[str, Any] | None] = {}

    def path(self, name: str) -> Path:
        return self.rootdir / name

    def get(self, name: str) -> tuple[str, Any] | None:
        """(text, module) of ``name`` relative to the rootdir; None if missing."""
        if name not in self._cache:
            try:
                data = self.path(name).read_bytes()
            except FileNotFoundError:
                self._cache[name] = None
            else:
                text = rewrite.decode(data, name).text
                self._cache[name] = (text, rewrite.parse(text, name))
        return self._cache[name]

    def find(self, loc: Location) -> literals.Literal | None:
        got = self.get(loc.file)
        return None if got is None else literals.find(got[1], loc)


def _list(obj: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = obj.get(key) or []
    if not isinstance(value, list):
        raise RunError(f"report.json: {key}: expected a list")
    return [v for v in value if isinstance(v, dict)]


def _number(value: object) -> Number | None:
    return value if rundir.is_finite_number(value) else None  # type: ignore[return-value]


def _location(data: dict[str, Any], snap: Stage | None, key: str) -> Location:
    if snap is not None and key in snap.metrics:
        return snap.metrics[key].location
    raw = data.get("location")
    if not isinstance(raw, dict):
        raise RunError(f"report.json: metric {key}: no location")
    fields = ("file", "symbol", "outer_key", "inner_key", "line")
    return Location(**{k: raw[k] for k in fields if k in raw})


def _plan_stage(
    data: dict[str, Any], snapshot: dict[str, Stage], sources: _Sources
) -> PlannedStage:
    key = str(data.get("stage_key"))
    snap = snapshot.get(key)
    group = str(data.get("group") or (snap.group if snap else ""))
    metrics = []
    for m in _list(data, "metrics"):
        metric_key = str(m.get("metric_key"))
        loc = _location(m, snap, metric_key)
        worst: Worst = "max" if m.get("worst_op") == "max" else "min"
        lit = sources.find(loc)
        current = None if lit is None else lit.value
        if lit is not None:
            loc = replace(loc, line=lit.node.lineno)
        write = _number(m.get("proposed", m.get("write_value")))
        if m.get("direction") == "fixed":
            direction = "fixed"
        else:
            direction = stats.direction(current, write, worst)
        metrics.append(
            PlannedMetric(
                stage_key=key,
                metric_key=metric_key,
                group=str(m.get("group") or group),
                stage_group=group,
                location=loc,
                worst_op=worst,
                label=str(m.get("label") or metric_key),
                digits=int(_number(m.get("digits")) or 0),
                scale=float(_number(m.get("scale")) or 1),
                integer=bool(m.get("integer")),
                per_run_raw=[
                    float(v)
                    for v in m.get("per_run_raw") or []
                    if _number(v) is not None
                ],
                worst_raw=_number(m.get("worst_raw")),
                write_value=write,
                current_raw=current,
                direction=direction,
                delta_pct=stats.delta_pct(current, write),
                policy=m.get("policy"),
                false_alarm_current=m.get("false_alarm_current"),
                false_alarm_new=m.get("false_alarm_new"),
                flags=list(m.get("flags") or []),
            )
        )
    return PlannedStage(
        stage_key=key,
        test=str(data.get("test") or (snap.test if snap else "")),
        title=str(data.get("title") or key),
        group=group,
        concurrency=data.get("concurrency"),
        threshold_file=data.get("threshold_file"),
        variant=data.get("variant"),
        metrics=metrics,
    )


def _check_files(
    plan: rundir.Plan,
    snapshot: dict[str, Stage],
    stages: list[PlannedStage],
    sources: _Sources,
) -> None:
    """Refuse when a threshold is gone or a file's logic changed since the run."""
    lines: list[str] = []
    for stage in stages:
        for m in stage.metrics:
            if m.current_raw is None:  # literals.find found nothing
                what = "the file is gone"
                if sources.get(m.location.file) is not None:
                    what = "the file no longer has this threshold"
                lines.append(
                    f"{m.location.file}: {m.location.ref} ({m.threshold_id}): {what}"
                )
    # The hash covers every recognised location of the file (the metrics and
    # not-calibrated entries of every stage of the snapshot), as the plan's
    # was; a stage's own hash only stands in for a plan that lacks the file.
    located = logic.file_locations(snapshot.values())
    expected = {f: h for f, h in plan.logic_hashes.items() if h}
    for snap in snapshot.values():
        if snap.test_logic_sha256 and snap.test not in plan.logic_hashes:
            expected.setdefault(snap.test, snap.test_logic_sha256)
    changed: list[str] = []
    for name in sorted(expected):
        got = sources.get(name)
        if got is None:
            changed.append(f"{name} (gone)")
        elif logic.logic_hash(got[0], located.get(name, ())) != expected[name]:
            changed.append(name)
    if changed:
        lines.append(
            "tests changed since calibration (logic hash differs): "
            + ", ".join(changed)
            + "; recalibrate, or restore the files"
        )
    if lines:
        raise RunError("cannot apply:\n  " + "\n  ".join(lines))


# -- answers and questions --------------------------------------------------


@dataclass(frozen=True)
class Answer:
    action: Action
    value: Number | None = None  # a custom value; None means write_value


def read_answers(path: Path, plan: ApplyPlan) -> dict[str, Answer]:
    """The answers file: threshold id -> ``keep`` | ``apply`` | a number."""
    from .config import load_yaml

    name = str(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, "", "no such answers file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, "", f"unreadable ({exc})") from None
    data = load_yaml(raw, name)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            name, "", "expected a mapping of threshold id to keep, apply or a number"
        )
    metrics = {m.threshold_id: m for m in plan.metrics()}
    answers: dict[str, Answer] = {}
    for key, raw in data.items():
        key = str(key)
        metric = metrics.get(key)
        if metric is None:
            raise ConfigError(name, key, "unknown threshold id" + closest(key, metrics))
        answers[key] = _answer(name, key, raw, metric)
    return answers


def _answer(name: str, key: str, raw: object, metric: PlannedMetric) -> Answer:
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text == "keep":
        return Answer("keep")
    if metric.direction == "fixed":
        raise ConfigError(name, key, "a fixed threshold is never rewritten; use keep")
    if text == "apply":
        if metric.write_value is None:
            raise ConfigError(
                name, key, "no proposed value to apply; use keep or a number"
            )
        return Answer("apply")
    value = _parse_number(raw)
    if value is None:
        raise ConfigError(name, key, f"expected keep, apply or a number, got {raw!r}")
    return Answer("apply", value)


def _parse_number(raw: object) -> Number | None:
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return raw if math.isfinite(raw) else None


def _tighter_than_worst(metric: PlannedMetric, value: Number) -> bool:
    if metric.worst_raw is None:
        return False
    return stats.fails(metric.worst_raw, value, metric.worst_op)


def _fmt(value: object) -> str:
    return "null" if value is None else str(value)


def _fmt_rates(rates: dict[str, Any] | None, runs: int) -> str:
    """The report's false-alarm estimates, as rates per CI run."""
    if not rates:
        return "n/a"
    parts = []
    for key in ("empirical", "normal"):
        value = _number(rates.get(key))
        if value is not None:
            parts.append(f"{key} {value:.1%}")
    fails = _number(rates.get("fails_observed"))
    if fails is not None:
        parts.append(f"fails {fails:g} of {runs} observed runs")
    return ", ".join(parts) or ", ".join(f"{k} {_fmt(v)}" for k, v in rates.items())


def question_text(metric: PlannedMetric) -> list[str]:
    """What a reviewer is shown before deciding one threshold."""
    loc = metric.location
    delta = "" if metric.delta_pct is None else f", Δ {metric.delta_pct:+.1f}%"
    runs = ", ".join(_fmt(v) for v in metric.per_run_raw) or "none"
    runs_n = len(metric.per_run_raw)
    return [
        f"{metric.threshold_id} ({metric.label}; {metric.group}, worst op "
        f"{metric.worst_op}) at {loc.file}:{loc.line} {loc.ref}",
        f"  per-run values: {runs} (worst {_fmt(metric.worst_raw)})",
        f"  current:  {_fmt(metric.current_raw)}",
        f"  proposed: {_fmt(metric.write_value)} ({metric.direction}{delta})",
        f"  false alarms now: {_fmt_rates(metric.false_alarm_current, runs_n)}",
        f"  false alarms proposed: {_fmt_rates(metric.false_alarm_new, runs_n)}",
    ]


def ask_user(
    metric: PlannedMetric, ask: Callable[[str], str], out: Out
) -> Answer | None:
    """Ask about one threshold; None when input ended (keep the rest too)."""
    for text in question_text(metric):
        out(text)
    prompt = "  [k]eep / [a]pply / a number (default keep): "
    while True:
        try:
            reply = ask(prompt).strip()
        except EOFError:
            return None
        low = reply.lower()
        if low in ("", "k", "keep"):
            return Answer("keep")
        if low in ("a", "apply") and metric.write_value is not None:
            return Answer("apply")
        value = _parse_number(reply)
        if value is None:
            out(f"  not understood: {reply!r}; answer k, a or a finite number")
            continue
        if _tighter_than_worst(metric, value):
            fails = stats.count_failing(metric.per_run_raw, value, metric.worst_op)
            try:
                sure = ask(
                    f"  {value} is tighter than the worst observation "
                    f"{metric.worst_raw} ({fails} of {len(metric.per_run_raw)} runs "
                    f"would fail). Use it anyway? [y/N]: "
                )
            except EOFError:
                return None
            if sure.strip().lower() not in ("y", "yes"):
                continue
        return Answer("apply", value)


# -- decisions --------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    metric: PlannedMetric
    value: Number  # what to write


@dataclass
class Review:
    decisions: list[Decision] = field(default_factory=list)
    unanswered: list[PlannedMetric] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def review(
    plan: ApplyPlan,
    mode: str,
    answers: dict[str, Answer],
    *,
    interactive: bool,
    ask: Callable[[str], str],
    out: Out,
) -> Review:
    """Decide what to write for every threshold of the plan."""
    result = Review()
    asking = interactive
    for m in plan.metrics():
        answer = answers.get(m.threshold_id) if mode == "smart" else None
        if answer is None:
            if not m.actionable:
                if m.direction == "unknown":
                    result.notes.append(f"{m.threshold_id}: no proposed value; kept")
                continue
            auto = m.group == "speed" and m.direction == "tightens"
            if mode == "smart" and not auto:
                if asking:
                    answer = ask_user(m, ask, out)
                    asking = answer is not None  # input ended: stop asking
                if answer is None:
                    result.unanswered.append(m)
                    continue
        if answer is not None and answer.action == "keep":
            continue
        custom = None if answer is None else answer.value
        value = m.write_value if custom is None else custom
        if value is None:
            continue
        if custom is not None and _tighter_than_worst(m, custom):
            result.notes.append(
                f"{m.threshold_id}: {custom} is tighter than the worst "
                f"observation {m.worst_raw}"
            )
        result.decisions.append(Decision(m, value))
    return result


def _key(loc: Location) -> tuple[str, str, Any, Any]:
    return (loc.file, loc.symbol, loc.outer_key, loc.inner_key)


def _edits(
    decisions: list[Decision], notes: list[str]
) -> dict[str, list[rewrite.Edit]]:
    """One edit per literal, grouped by file.

    Two stages can share a literal; when their values differ, the looser one
    wins, so neither stage fails on what it observed.
    """
    chosen: dict[tuple[str, str, Any, Any], Decision] = {}
    for d in decisions:
        key = _key(d.metric.location)
        other = chosen.get(key)
        if other is None:
            chosen[key] = d
            continue
        if other.value == d.value:
            continue
        looser = d if stats.fails(d.value, other.value, d.metric.worst_op) else other
        notes.append(
            f"{d.metric.location.ref}: shared by {other.metric.threshold_id} and "
            f"{d.metric.threshold_id}; writing the looser {looser.value}"
        )
        chosen[key] = looser
    files: dict[str, list[rewrite.Edit]] = {}
    for d in chosen.values():
        loc = d.metric.location
        files.setdefault(loc.file, []).append(rewrite.Edit(loc, d.value))
    return files


# -- run --------------------------------------------------------------------


def run_apply(
    run_dir: Path,
    rootdir: Path,
    *,
    mode: str,
    answers: Path | None,
    interactive: bool,
    out: Callable[[str], None],
    ask: Callable[[str], str] | None = None,
) -> int:
    """``pytest --tune-apply DIR``: review and write the thresholds; exit code."""
    if mode not in APPLY_MODES:
        raise TuneError(
            f"--tune-apply-mode: expected one of {', '.join(APPLY_MODES)}, got {mode!r}"
        )
    plan = make_plan(run_dir, rootdir)
    given = {} if answers is None else read_answers(answers, plan)
    if given and mode != "smart":
        out(f"note: {answers} is only used in smart mode; ignored in mode {mode}")
    outcome = review(
        plan,
        mode,
        given,
        interactive=interactive,
        ask=input if ask is None else ask,
        out=out,
    )
    for note in outcome.notes:
        out(f"note: {note}")
    edits = _edits(outcome.decisions, outcome.notes)
    if mode == "report":
        return _report_only(run_dir, rootdir, edits, out)
    # Read applied.json before touching any file, so a bad one stops us early.
    history = _read_applied(run_dir)
    changes, failed = _write(rootdir, edits, out)
    rc = 1 if failed else 0
    if changes:
        _record(run_dir, history, changes, outcome.decisions)
        for change in changes:
            out(f"{change.location.file}:{change.location.ref} = {change.new_text}")
        rc = max(rc, _rerender(run_dir, out))
    n_files = len({c.location.file for c in changes})
    if changes:
        out(f"applied {len(changes)} change(s) in {n_files} file(s)")
    elif not failed:
        out("nothing to write: every threshold already has its decided value")
    if outcome.unanswered:
        _list_unanswered(outcome.unanswered, answers, out)
    return rc


def _write(
    rootdir: Path, edits: dict[str, list[rewrite.Edit]], out: Out
) -> tuple[list[rewrite.Change], list[str]]:
    changes: list[rewrite.Change] = []
    failed: list[str] = []
    for name in sorted(edits):
        try:
            changes += rewrite.write_file(rootdir / name, edits[name], name=name)
        except rewrite.RewriteError as exc:
            out(f"error: {exc}")
            failed.append(name)
    if failed:
        out(f"not applied (left as they were): {', '.join(failed)}")
    return changes, failed


def _report_only(
    run_dir: Path, rootdir: Path, edits: dict[str, list[rewrite.Edit]], out: Out
) -> int:
    patch: list[str] = []
    count = 0
    for name in sorted(edits):
        before = (rootdir / name).read_bytes()
        after, changes = rewrite.rewrite(before, edits[name], name=name)
        count += len(changes)
        if changes:
            patch.append(rewrite.unified_diff(name, before, after))
    text = "".join(patch)
    atomic.write_bytes(run_dir / PATCH, text.encode("utf-8"))
    for line in text.splitlines():
        out(line)
    out(
        f"report mode: {count} change(s) in {len(patch)} file(s), nothing written; "
        f"the diff is in {run_dir / PATCH}"
    )
    return 0


def _read_applied(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / rundir.APPLIED
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable ({exc}); move it away to apply") from None
    changes = data.get("changes") if isinstance(data, dict) else None
    if not isinstance(changes, list):
        raise RunError(f"{path}: expected {{'changes': [...]}}; move it away to apply")
    return changes


def _record(
    run_dir: Path,
    history: list[dict[str, Any]],
    changes: list[rewrite.Change],
    decisions: list[Decision],
) -> None:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    by_key: dict[tuple[str, str, Any, Any], list[PlannedMetric]] = {}
    for d in decisions:
        by_key.setdefault(_key(d.metric.location), []).append(d.metric)
    for change in changes:
        loc = change.location
        for m in by_key.get(_key(loc), []):
            history.append(
                {
                    "stage_key": m.stage_key,
                    "metric_key": m.metric_key,
                    "file": loc.file,
                    "symbol": loc.symbol,
                    "outer_key": loc.outer_key,
                    "inner_key": loc.inner_key,
                    "source": loc.source,
                    "ref": loc.ref,
                    "old": change.old,
                    "new": change.new,
                    "direction": stats.direction(change.old, change.new, m.worst_op),
                    "delta_pct": stats.delta_pct(change.old, change.new),
                    "applied_at": now,
                }
            )
    atomic.write_json(run_dir / rundir.APPLIED, {"changes": history})


def _rerender(run_dir: Path, out: Out) -> int:
    from .report import write_report

    try:
        result = write_report(run_dir)
    except TuneError as exc:
        out(f"error: the thresholds were written, but the report was not: {exc}")
        return 1
    return 0 if result.exit_code == 0 else 1


def _list_unanswered(
    metrics: list[PlannedMetric], answers: Path | None, out: Out
) -> None:
    where = answers if answers is not None else "a YAML file"
    out(
        f"{len(metrics)} threshold(s) need a decision and were kept; add to {where} "
        f"(--tune-apply-answers) one line each, keep | apply | a number:"
    )
    for m in metrics:
        delta = "" if m.delta_pct is None else f" {m.delta_pct:+.1f}%"
        change = f"{_fmt(m.current_raw)} -> {_fmt(m.write_value)}"
        out(f"  {m.threshold_id}: apply    # {change}, {m.direction}{delta}")
