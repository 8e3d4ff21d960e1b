"""Precheck: is this host ready to calibrate a model? Looks, never changes.

One check per pinned package, per Hugging Face model and dataset of the
selected stages, and one for the GPUs. Each gives an ``ok`` or ``missing``
line with the command that fixes it. Nothing is installed, downloaded or
killed. The result is also written as ``precheck.json`` when an output
directory is given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from importlib import metadata
from pathlib import Path
from typing import Any
from typing import Protocol

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from . import atomic
from . import gitinfo
from .errors import ConfigError
from .errors import TuneError
from .gpu.backend import Backend
from .gpu.backend import GpuPollError
from .gpu.gate import calibration_pids
from .gpu.gate import classify
from .gpu.pool import GpuPool
from .rundir import PRECHECK
from .stages import Stage


if sys.version_info >= (3, 11):
    import tomllib
else:
    # A dependency on Python 3.10 (see pyproject.toml); kept soft all the same.
    try:
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        tomllib = None


WEIGHT_SUFFIXES = (".safetensors", ".bin")


class PrecheckModel(Protocol):
    """The parts of a model config the precheck reads."""

    @property
    def name(self) -> str: ...
    @property
    def hf_model_id(self) -> str | None: ...
    @property
    def hf_model_ids_by_test(self) -> Mapping[str, Sequence[str]]: ...
    @property
    def hf_datasets(self) -> Sequence[str]: ...
    @property
    def hf_datasets_by_test(self) -> Mapping[str, Sequence[str]]: ...
    @property
    def pins_file(self) -> str: ...
    @property
    def gpu_free_mib(self) -> int: ...
    @property
    def gpu_exclude(self) -> Collection[int]: ...
    def gpus_for(self, basename: str) -> int: ...


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def line(self) -> str:
        text = f"{'ok' if self.ok else 'missing':<8} {self.name}: {self.detail}"
        if self.fix and not self.ok:
            text += f"; fix: {self.fix}"
        return text


@dataclass
class PrecheckResult:
    ok: bool
    lines: list[str]
    data: dict[str, Any]  # what precheck.json holds
    checks: list[Check] = field(default_factory=list)


def run_precheck(
    model: PrecheckModel,
    stages: Sequence[Stage],
    rootdir: Path,
    backend: Backend,
    out_dir: Path | None,
) -> PrecheckResult:
    pins_path = rootdir / model.pins_file
    checks, versions, pinned = check_pins(pins_path)
    models, datasets = required_assets(model, stages)
    cache = hub_cache()
    checks += [check_model(cache, repo) for repo in models]
    checks += [check_dataset(cache, repo) for repo in datasets]
    need = max((model.gpus_for(Path(s.test).name) for s in stages), default=0)
    gpu_check, gpu_data = check_gpus(backend, model, need)
    checks.append(gpu_check)
    ok = all(c.ok for c in checks)
    data: dict[str, Any] = {
        "model": model.name,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": gpu_data,
        "versions": versions,
        "pins": pinned,
        "git": git_state(rootdir),
        "checks": [asdict(c) for c in checks],
        "ok": ok,
    }
    if out_dir is not None:
        atomic.write_json(out_dir / PRECHECK, data)
    failed = sum(1 for c in checks if not c.ok)
    summary = "precheck OK" if ok else f"precheck FAILED ({failed} problem(s))"
    lines = [c.line() for c in checks] + [summary]
    return PrecheckResult(ok, lines, data, checks)


# -- pins ---------------------------------------------------------------------


def read_pins(path: Path) -> list[Requirement]:
    """The ``==`` pins of ``[project].dependencies`` whose markers apply here."""
    if tomllib is None:
        raise ConfigError(str(path), "", "reading it on Python 3.10 needs tomli")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"unreadable ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML ({exc})") from None
    project = data.get("project", {})
    deps = project.get("dependencies", []) if isinstance(project, dict) else []
    if not isinstance(deps, list):
        raise ConfigError(str(path), "project.dependencies", "expected a list")
    pins = []
    for i, text in enumerate(deps):
        key = f"project.dependencies[{i}]"
        if not isinstance(text, str):
            raise ConfigError(str(path), key, f"expected a string, got {text!r}")
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise ConfigError(str(path), key, f"{text!r}: {exc}") from None
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator in ("==", "==="):
            pins.append(req)
    return pins


def installed_version(name: str) -> str | None:
    """The installed distribution's version, from metadata (never imported)."""
    for candidate in dict.fromkeys([name, canonicalize_name(name)]):
        try:
            return metadata.version(candidate)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_pins(
    path: Path,
) -> tuple[list[Check], dict[str, str | None], dict[str, str]]:
    if not path.is_file():
        return (
            [Check("pins", True, f"no {path.name} at {path}; nothing pinned")],
            {},
            {},
        )
    try:
        pins = read_pins(path)
    except ConfigError as exc:
        fix = "pip install tomli" if tomllib is None else f"fix {path}"
        return [Check("pins", False, str(exc), fix)], {}, {}
    checks: list[Check] = []
    versions: dict[str, str | None] = {}
    pinned: dict[str, str] = {}
    for req in pins:
        spec = next(iter(req.specifier))
        installed = installed_version(req.name)
        versions[req.name] = installed
        pinned[req.name] = spec.version
        name = f"pin {req.name}{spec}"
        fix = _pip_install(req, str(spec))
        if installed is None:
            checks.append(Check(name, False, "not installed", fix))
        elif req.specifier.contains(installed, prereleases=True):
            checks.append(Check(name, True, f"installed {installed}"))
        else:
            checks.append(Check(name, False, f"installed {installed}", fix))
    if not checks:
        checks.append(Check("pins", True, f"no == pins in {path.name}"))
    return checks, versions, pinned


def _pip_install(req: Requirement, spec: str) -> str:
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    target = f"{req.name}{extras}{spec}"
    return f"pip install '{target}'" if extras else f"pip install {target}"


# -- Hugging Face cache ---------------------------------------------------------


def hub_cache(environ: Mapping[str, str] | None = None) -> Path:
    """The hub cache dir, resolved the way ``huggingface_hub`` does."""
    env = os.environ if environ is None else environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def required_assets(
    model: PrecheckModel, stages: Sequence[Stage]
) -> tuple[list[str], list[str]]:
    """Models and datasets the selected stages need (the defaults when none)."""
    models: list[str] = []
    datasets: list[str] = []
    default_models = [model.hf_model_id] if model.hf_model_id else []
    if not stages:
        return default_models, list(dict.fromkeys(model.hf_datasets))
    for stage in stages:
        base = Path(stage.test).name
        models += model.hf_model_ids_by_test.get(base, default_models)
        datasets += model.hf_datasets_by_test.get(base, model.hf_datasets)
    return list(dict.fromkeys(models)), list(dict.fromkeys(datasets))


def _repo_dir(cache: Path, kind: str, repo_id: str) -> Path:
    return cache / f"{kind}s--{repo_id.replace('/', '--')}"


def _snapshot_files(repo_dir: Path) -> Iterable[Path]:
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return
    for path in sorted(snapshots.rglob("*")):
        # exists() follows the snapshot symlink into blobs/; a dangling one
        # (blob deleted or never finished) does not count.
        if path.is_file() and path.exists():
            yield path


def check_model(cache: Path, repo_id: str) -> Check:
    name = f"model {repo_id}"
    fix = f"hf download {repo_id}"
    repo_dir = _repo_dir(cache, "model", repo_id)
    files = list(_snapshot_files(repo_dir))
    if not files:
        return Check(name, False, f"not in the Hugging Face cache ({repo_dir})", fix)
    if not any(f.name.endswith(WEIGHT_SUFFIXES) for f in files):
        detail = f"no *.safetensors or *.bin weights under {repo_dir / 'snapshots'}"
        return Check(name, False, detail, fix)
    return Check(name, True, f"cached in {repo_dir}")


def check_dataset(cache: Path, repo_id: str) -> Check:
    name = f"dataset {repo_id}"
    repo_dir = _repo_dir(cache, "dataset", repo_id)
    if not any(True for _ in _snapshot_files(repo_dir)):
        fix = f"hf download {repo_id} --repo-type dataset"
        return Check(name, False, f"not in the Hugging Face cache ({repo_dir})", fix)
    return Check(name, True, f"cached in {repo_dir}")


# -- GPUs -----------------------------------------------------------------------


def check_gpus(
    backend: Backend, model: PrecheckModel, need: int
) -> tuple[Check, dict[str, Any] | None]:
    """Enough free GPUs now, by the gate's rule; plus the inventory for the report."""
    if not backend.enabled:
        return Check("gpus", True, f"ok (gate off: {backend.notice})"), None
    try:
        polled = backend.poll()
    except GpuPollError as exc:
        unknown = {"model": None, "count": None, "driver": backend.driver_version()}
        return Check("gpus", False, str(exc), "check the GPU backend"), unknown
    data: dict[str, Any] = {
        "model": polled[0].name if polled else None,
        "count": len(polled),
        "driver": backend.driver_version(),
    }
    try:
        pool = GpuPool.from_env(model.gpu_exclude)
    except TuneError as exc:
        return Check("gpus", False, str(exc), "fix CUDA_VISIBLE_DEVICES"), data
    states = classify(pool.members(polled), calibration_pids())
    free = [s for s in states if s.free_after_cleanup(model.gpu_free_mib)]
    detail = (
        f"{len(free)} of {len(states)} GPU(s) free in the pool "
        f"({pool.describe()}), need {need}"
    )
    if len(free) >= need:
        return Check("gpus", True, detail), data
    busy = [s for s in states if s not in free]
    detail += "; " + "; ".join(s.describe(model.gpu_free_mib) for s in busy)
    fix = (
        "wait for the GPUs or free them yourself "
        "(pytest-tune-ci never signals other users' processes)"
    )
    return Check("gpus", False, detail, fix), data


# -- git ------------------------------------------------------------------------


def git_state(rootdir: Path) -> dict[str, Any]:
    state = gitinfo.state(rootdir)
    return {
        "sha": state.sha,
        "branch": state.branch,
        "dirty": None if state.sha is None else state.dirty,
    }
