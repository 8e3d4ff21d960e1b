"""Model configs: ``models/<name>/config.yaml`` read into typed records.

The format is the legacy tool's (see docs), read with PyYAML and validated
strictly: an unknown key, a wrong type or a path that leaves its base
directory is a :class:`ConfigError` naming the file, the key path and what
was expected, with the closest known key when one is close.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import Any
from typing import Literal
from typing import NoReturn

import yaml

from .errors import ConfigError
from .errors import TuneError
from .errors import closest
from .metrics import BUILTIN
from .metrics import MetricUpdate
from .metrics import Registry


CONFIG_NAME = "config.yaml"
STAGES_NAME = "stages.yaml"

PolicyKind = Literal["worst", "slack", "predict"]
ThresholdRef = tuple[str, str | None]  # (symbol, inner key) of thresholds:


@dataclass(frozen=True)
class CountSources:
    """Where a stage's sample counts are read: paths as in ``paths``."""

    total: str | None = None
    ok: str | None = None


@dataclass(frozen=True)
class MetricSource:
    """``metric_sources.<test basename>`` (or one of its ``variants``).

    ``paths`` maps a metric key to a dotted path in ``json_file`` or to
    ``other_file::dotted.path``; files are relative to the repeat's basetemp.
    A variant inherits every key it does not set from its test's entry.
    """

    json_file: str | None = None
    paths: dict[str, str] = field(default_factory=dict)
    sample_counts: CountSources | None = None
    sample_counts_by_group: dict[str, CountSources] = field(default_factory=dict)
    expected_samples: int | dict[str, int] | None = None
    ignored_constants: list[str] = field(default_factory=list)
    threshold_file: str | None = None  # relative to the rootdir
    observation_validity: str | None = None
    allowed_pytest_failure: str | None = None
    context_vars: list[str] | None = None  # overrides the AST-derived list
    constant_filter: str | None = None  # variants only
    stage_base_override: str | None = None  # variants only
    omit_variant_suffix: bool = False  # variants only
    variants: dict[str, MetricSource] = field(default_factory=dict)

    def counts_for(self, group: str) -> CountSources | None:
        return self.sample_counts_by_group.get(group, self.sample_counts)

    def expected_for(self, group: str) -> int | None:
        if isinstance(self.expected_samples, dict):
            return self.expected_samples.get(group)
        return self.expected_samples


@dataclass(frozen=True)
class ThresholdPolicy:
    """``worst`` (worst-of-N), ``slack:P`` or ``predict:A``."""

    kind: PolicyKind
    value: float | None = None

    @property
    def text(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: Path  # the config file
    dir: Path
    rootdir: Path
    raw_sha256: str
    description: str
    hf_model_id: str | None
    hf_model_ids: list[str]
    hf_model_ids_by_test: dict[str, list[str]]
    hf_datasets: list[str]
    hf_datasets_by_test: dict[str, list[str]]
    requires_speaker_sim: bool
    requires_speaker_sim_by_test: dict[str, bool]
    omni_ci_home: str | None
    default_venv_python: list[str]  # recorded only: tests run in-process
    expected_wer_normalizer: str | None  # recorded only
    test_globs: list[str]
    auto_env: dict[str, str]
    extra_env: dict[str, dict[str, str]]
    gpus_default: int
    gpus_per_test: dict[str, int]
    pytest_extra_args: dict[str, list[str]]
    stage_base_strip_prefix: str
    stage_base_strip_suffix: str
    stage_base_docs_override: str | None
    metric_sources: dict[str, MetricSource]
    registry: Registry
    thresholds: dict[str, dict[ThresholdRef, str]]
    concurrency: dict[str, int]
    crash_signatures: list[str]  # extends the watchdog's defaults
    watch_logs: list[str]
    attempt_timeout_s: float | None
    stall_timeout_s: float | None
    gpu_free_mib: int
    gpu_wait_s: float
    gpu_exclude: list[int]
    exclusive_groups: list[str]
    threshold_policy: dict[str, ThresholdPolicy]
    ci_slack: dict[str, float]
    noise_cv_max: dict[str, float]
    pins_file: str

    @property
    def stages_path(self) -> Path:
        return self.dir / STAGES_NAME

    def gpus_for(self, basename: str) -> int:
        return self.gpus_per_test.get(basename, self.gpus_default)

    def policy_for(self, group: str) -> ThresholdPolicy:
        return self.threshold_policy.get(
            group, self.threshold_policy.get("default", ThresholdPolicy("worst"))
        )


# -- public functions --------------------------------------------------------


def list_models(models_dir: Path) -> list[str]:
    """Names of the directories under ``models_dir`` holding a config.yaml."""
    if not models_dir.is_dir():
        return []
    return sorted(
        d.name
        for d in models_dir.iterdir()
        if d.is_dir() and (d / CONFIG_NAME).is_file()
    )


def load_model(models_dir: Path, name: str, rootdir: Path) -> ModelConfig:
    """Load ``models_dir/<name>/config.yaml``; unknown names list the known."""
    known = list_models(models_dir)
    if name not in known or "/" in name or name.startswith("."):
        listed = ", ".join(known) if known else "none"
        raise TuneError(
            f"unknown model {name!r} in {_show(models_dir, rootdir)}"
            f"{closest(name, known)}; known models: {listed}"
        )
    model = load_config_file(models_dir / name / CONFIG_NAME, rootdir)
    if model.name != name:
        raise ConfigError(
            _show(model.path, rootdir),
            "name",
            f"expected {name!r} (the directory name), got {model.name!r}",
        )
    return model


def load_config_file(path: Path, rootdir: Path) -> ModelConfig:
    """Load one config file, e.g. the copy a run directory keeps."""
    shown = _show(path, rootdir)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(shown, "", f"cannot read: {exc.strerror}") from None
    data = load_yaml(raw, shown)
    return _Parser(shown).model(data, path, rootdir, raw)


def split_source(entry: str, default_file: str | None) -> tuple[str | None, str]:
    """``"a.b"`` -> (default_file, "a.b"); ``"f.json::a.b"`` -> ("f.json", "a.b")."""
    if "::" in entry:
        file, _, dotted = entry.partition("::")
        return file.strip(), dotted.strip()
    return default_file, entry


def load_yaml(raw: bytes | str, shown: str) -> Any:
    """PyYAML safe_load that refuses duplicate keys and names the bad line."""
    try:
        return yaml.load(raw, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "malformed"
        raise ConfigError(shown, where, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(shown, "", f"invalid YAML: {exc}") from None


# libyaml's parser where PyYAML has it: about 7x faster on big stages files.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    pass


def _mapping_no_duplicates(
    loader: yaml.SafeLoader, node: yaml.MappingNode
) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (list, dict)):
            continue  # construct_mapping reports unhashable keys itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_no_duplicates,
)


# -- validation --------------------------------------------------------------

_DOCS_ONLY = ("precheck_checklist", "agent_policy", "handoff")

_TOP_KEYS = (
    "name",
    "description",
    "hf_model_id",
    "hf_model_ids",
    "hf_model_ids_by_test",
    "hf_datasets",
    "hf_datasets_by_test",
    "requires_speaker_sim",
    "requires_speaker_sim_by_test",
    "omni_ci_home",
    "default_venv_python",
    "expected_wer_normalizer",
    "auto_env",
    "extra_env",
    "gpus_per_test",
    "pytest_extra_args",
    "test_globs",
    "stage_base_strip_prefix",
    "stage_base_strip_suffix",
    "stage_base_docs_override",
    "metric_sources",
    "calibration_presets",
    "metrics",
    "thresholds",
    "concurrency",
    "crash_signatures",
    "watch_logs",
    "attempt_timeout_s",
    "stall_timeout_s",
    "gpu_free_mib",
    "gpu_wait_s",
    "gpu_exclude",
    "exclusive_groups",
    "threshold_policy",
    "ci_slack",
    "noise_cv_max",
    "pins_file",
    *_DOCS_ONLY,
)

_SOURCE_KEYS = (
    "json_file",
    "paths",
    "sample_counts",
    "sample_counts_by_group",
    "expected_samples",
    "ignored_constants",
    "threshold_file",
    "observation_validity",
    "allowed_pytest_failure",
    "context_vars",
    "variants",
)
_VARIANT_KEYS = (
    *(k for k in _SOURCE_KEYS if k != "variants"),
    "constant_filter",
    "stage_base_override",
    "omit_variant_suffix",
)
_METRIC_KEYS = (
    "worst",
    "label",
    "group",
    "digits",
    "scale",
    "patterns",
    "nested_keys",
    "integer",
)
_BUILTIN_SETTABLE = ("label", "digits", "scale", "patterns", "nested_keys")

_IDENT = re.compile(r"[A-Za-z0-9_]+")
_METRIC_KEY = re.compile(r"[a-z][a-z0-9_]*")
_THRESHOLD_REF = re.compile(
    r"(_*[A-Za-z][A-Za-z0-9_]*)(?:\[\s*(['\"]?)([^\]'\"]+)\2\s*\])?"
)
_CONSTANT_NAME = re.compile(r"_*[A-Za-z][A-Za-z0-9_]*")


def _show(path: Path, rootdir: Path) -> str:
    try:
        return path.resolve().relative_to(rootdir.resolve()).as_posix()
    except ValueError:
        return str(path)


def _join(key: str, sub: object) -> str:
    return f"{key}.{sub}" if key else str(sub)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"


class _Parser:
    """Validates raw YAML data; every error names ``self.file``."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.registry = BUILTIN

    def fail(self, key: str, message: str) -> NoReturn:
        raise ConfigError(self.file, key, message)

    # -- scalars and containers

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {_kind(value)}")
        for sub in value:
            if not isinstance(sub, str):
                self.fail(_join(key, sub), f"expected a string key, got {_kind(sub)}")
        return value

    def known_keys(
        self, data: dict[str, Any], allowed: tuple[str, ...], key: str
    ) -> None:
        for sub in data:
            if sub not in allowed:
                hint = closest(sub, allowed)
                listed = (
                    ""
                    if len(allowed) > 15
                    else f"; expected one of: {', '.join(allowed)}"
                )
                self.fail(_join(key, sub), f"unknown key{hint}{listed}")

    def string(self, value: Any, key: str, *, empty: bool = False) -> str:
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_kind(value)}")
        if not empty and not value.strip():
            self.fail(key, "expected a non-empty string")
        return value

    def opt_string(self, value: Any, key: str) -> str | None:
        return None if value is None else self.string(value, key)

    def integer(self, value: Any, key: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            self.fail(key, f"expected an integer >= {minimum}, got {value}")
        return value

    def number(self, value: Any, key: str, *, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"expected a number, got {_kind(value)}")
        if positive and not value > 0:
            self.fail(key, f"expected a positive number, got {value}")
        if not positive and value < 0:
            self.fail(key, f"expected a number >= 0, got {value}")
        return float(value)

    def opt_number(self, value: Any, key: str) -> float | None:
        return None if value is None else self.number(value, key, positive=True)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_kind(value)}")
        return value

    def str_list(self, value: Any, key: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            self.fail(key, f"expected a list of strings, got {_kind(value)}")
        if not isinstance(value, list):
            self.fail(key, f"expected a list of strings, got {_kind(value)}")
        return [self.string(item, f"{key}[{i}]") for i, item in enumerate(value)]

    def env_map(self, value: Any, key: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, item in self.mapping(value, key).items():
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                self.fail(
                    _join(key, name), f"expected a string value, got {_kind(item)}"
                )
            out[name] = str(item)
        return out

    def basename(self, name: str, key: str) -> str:
        if "/" in name or "\\" in name or not name.strip():
            self.fail(key, "expected a test file basename such as test_x_ci.py")
        return name

    def per_test(self, value: Any, key: str) -> dict[str, Any]:
        data = self.mapping(value, key)
        for name in data:
            self.basename(name, _join(key, name))
        return data

    def rel_path(self, value: Any, key: str, what: str = "path") -> str:
        text = self.string(value, key).strip()
        if text.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:[\\/]", text):
            self.fail(key, f"expected a relative {what}, got the absolute {text!r}")
        norm = posixpath.normpath(text.replace("\\", "/"))
        if norm == ".." or norm.startswith("../"):
            self.fail(key, f"expected a {what} inside its base directory, got {text!r}")
        return text

    def regex(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        try:
            re.compile(text)
        except re.error as exc:
            self.fail(key, f"expected a Python regex: {exc}")
        return text

    # -- the model

    def model(self, data: Any, path: Path, rootdir: Path, raw: bytes) -> ModelConfig:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail("", f"expected a mapping of config keys, got {_kind(data)}")
        top = self.mapping(data, "")
        self.known_keys(top, _TOP_KEYS, "")
        if "calibration_presets" in top:
            self.fail(
                "calibration_presets",
                "not supported yet; give each preset its own model directory",
            )
        self.registry = self.metrics(top.get("metrics"))
        get = top.get
        name = self.string(get("name", path.parent.name), "name")
        gpus_default, gpus_per_test = self.gpus(get("gpus_per_test"))
        auto_env = self.env_map(get("auto_env"), "auto_env")
        omni_ci_home = self.opt_string(get("omni_ci_home"), "omni_ci_home")
        if omni_ci_home is not None:
            # Like the legacy tool: defaults under the CI home, unless set.
            home = omni_ci_home.rstrip("/")
            auto_env.setdefault("OMNI_CI_HOME", home)
            auto_env.setdefault("XDG_CACHE_HOME", f"{home}/.cache")
            auto_env.setdefault("TORCHINDUCTOR_CACHE_DIR", f"{home}/.torchinductor")
        venv = get("default_venv_python")
        venvs = (
            [venv]
            if isinstance(venv, str)
            else self.str_list(venv, "default_venv_python")
        )
        globs = self.str_list(get("test_globs"), "test_globs")
        if not globs:
            self.fail(
                "test_globs",
                "expected a non-empty list of globs relative to the rootdir",
            )
        for i, pattern in enumerate(globs):
            self.rel_path(pattern, f"test_globs[{i}]", "glob")
        return ModelConfig(
            name=name,
            path=path,
            dir=path.parent,
            rootdir=rootdir,
            raw_sha256=hashlib.sha256(raw).hexdigest(),
            description=self.string(get("description", ""), "description", empty=True),
            hf_model_id=self.opt_string(get("hf_model_id"), "hf_model_id"),
            hf_model_ids=self.str_list(get("hf_model_ids"), "hf_model_ids"),
            hf_model_ids_by_test=self.list_per_test(
                get("hf_model_ids_by_test"), "hf_model_ids_by_test"
            ),
            hf_datasets=self.str_list(get("hf_datasets"), "hf_datasets"),
            hf_datasets_by_test=self.list_per_test(
                get("hf_datasets_by_test"), "hf_datasets_by_test"
            ),
            requires_speaker_sim=self.boolean(
                get("requires_speaker_sim", False), "requires_speaker_sim"
            ),
            requires_speaker_sim_by_test={
                b: self.boolean(v, f"requires_speaker_sim_by_test.{b}")
                for b, v in self.per_test(
                    get("requires_speaker_sim_by_test"), "requires_speaker_sim_by_test"
                ).items()
            },
            omni_ci_home=omni_ci_home,
            default_venv_python=venvs,
            expected_wer_normalizer=self.opt_string(
                get("expected_wer_normalizer"), "expected_wer_normalizer"
            ),
            test_globs=globs,
            auto_env=auto_env,
            extra_env={
                b: self.env_map(v, f"extra_env.{b}")
                for b, v in self.per_test(get("extra_env"), "extra_env").items()
            },
            gpus_default=gpus_default,
            gpus_per_test=gpus_per_test,
            pytest_extra_args=self.extra_args(get("pytest_extra_args")),
            stage_base_strip_prefix=self.string(
                get("stage_base_strip_prefix", ""),
                "stage_base_strip_prefix",
                empty=True,
            ),
            stage_base_strip_suffix=self.string(
                get("stage_base_strip_suffix", ""),
                "stage_base_strip_suffix",
                empty=True,
            ),
            stage_base_docs_override=self.opt_string(
                get("stage_base_docs_override"), "stage_base_docs_override"
            ),
            metric_sources={
                b: self.source(v, f"metric_sources.{b}", None)
                for b, v in self.per_test(
                    get("metric_sources"), "metric_sources"
                ).items()
            },
            registry=self.registry,
            thresholds=self.thresholds(get("thresholds")),
            concurrency={
                b: self.integer(v, f"concurrency.{b}", minimum=1)
                for b, v in self.per_test(get("concurrency"), "concurrency").items()
            },
            crash_signatures=[
                self.regex(v, f"crash_signatures[{i}]")
                for i, v in enumerate(
                    self.str_list(get("crash_signatures"), "crash_signatures")
                )
            ],
            watch_logs=[
                self.rel_path(v, f"watch_logs[{i}]", "glob")
                for i, v in enumerate(self.str_list(get("watch_logs"), "watch_logs"))
            ],
            attempt_timeout_s=self.opt_number(
                get("attempt_timeout_s"), "attempt_timeout_s"
            ),
            stall_timeout_s=self.opt_number(get("stall_timeout_s"), "stall_timeout_s"),
            gpu_free_mib=self.integer(
                get("gpu_free_mib", 2048), "gpu_free_mib", minimum=0
            ),
            gpu_wait_s=self.number(get("gpu_wait_s", 600), "gpu_wait_s"),
            gpu_exclude=self.int_list(get("gpu_exclude"), "gpu_exclude"),
            exclusive_groups=[
                self.group(v, f"exclusive_groups[{i}]")
                for i, v in enumerate(
                    self.str_list(get("exclusive_groups"), "exclusive_groups")
                )
            ],
            threshold_policy=self.policies(get("threshold_policy")),
            ci_slack=self.slacks(get("ci_slack")),
            noise_cv_max={
                "speed": 0.05,
                **{
                    self.group(g, f"noise_cv_max.{g}"): self.number(
                        v, f"noise_cv_max.{g}"
                    )
                    for g, v in self.mapping(
                        get("noise_cv_max"), "noise_cv_max"
                    ).items()
                },
            },
            pins_file=self.rel_path(get("pins_file", "pyproject.toml"), "pins_file"),
        )

    def gpus(self, value: Any) -> tuple[int, dict[str, int]]:
        if value is None:
            return 1, {}
        if isinstance(value, int) and not isinstance(value, bool):
            return self.integer(value, "gpus_per_test", minimum=0), {}
        if not isinstance(value, dict):
            self.fail(
                "gpus_per_test",
                "expected an integer or a mapping of test basename to integer, "
                f"got {_kind(value)}",
            )
        return 1, {
            b: self.integer(v, f"gpus_per_test.{b}", minimum=0)
            for b, v in self.per_test(value, "gpus_per_test").items()
        }

    def list_per_test(self, value: Any, key: str) -> dict[str, list[str]]:
        return {
            b: self.str_list(v, f"{key}.{b}")
            for b, v in self.per_test(value, key).items()
        }

    def int_list(self, value: Any, key: str) -> list[int]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, f"expected a list of integers, got {_kind(value)}")
        return [self.integer(v, f"{key}[{i}]", minimum=0) for i, v in enumerate(value)]

    def extra_args(self, value: Any) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for b, args in self.per_test(value, "pytest_extra_args").items():
            key = f"pytest_extra_args.{b}"
            if not isinstance(args, list):
                self.fail(key, f"expected a list of arguments, got {_kind(args)}")
            items: list[str] = []
            for i, arg in enumerate(args):
                if isinstance(arg, bool) or not isinstance(arg, (str, int, float)):
                    self.fail(f"{key}[{i}]", f"expected a string, got {_kind(arg)}")
                items.append(str(arg))
            out[b] = items
        return out

    def group(self, value: Any, key: str, *, extra: tuple[str, ...] = ()) -> str:
        text = self.string(value, key)
        known = (*self.registry.groups, "docs", *extra)
        if text not in known:
            self.fail(
                key,
                f"unknown stage group {text!r}{closest(text, known)}; "
                f"expected one of: {', '.join(known)}",
            )
        return text

    def metric_key(self, value: str, key: str) -> str:
        if value not in self.registry:
            self.fail(
                key,
                f"unknown metric {value!r}{closest(value, self.registry.keys)}; "
                "expected a built-in metric or one added under metrics:",
            )
        return value

    # -- metrics: and thresholds:

    def metrics(self, value: Any) -> Registry:
        updates: dict[str, MetricUpdate] = {}
        for name, raw in self.mapping(value, "metrics").items():
            key = f"metrics.{name}"
            if not _METRIC_KEY.fullmatch(name):
                self.fail(
                    key, "expected a metric key of lower-case letters, digits and _"
                )
            entry = self.mapping(raw, key)
            self.known_keys(entry, _METRIC_KEYS, key)
            builtin = name in BUILTIN
            if builtin:
                for sub in entry:
                    if sub not in _BUILTIN_SETTABLE:
                        self.fail(
                            f"{key}.{sub}",
                            f"cannot change a built-in metric's {sub}; "
                            f"expected only: {', '.join(_BUILTIN_SETTABLE)}",
                        )
            else:
                for need in ("worst", "label", "group"):
                    if need not in entry:
                        self.fail(
                            f"{key}.{need}",
                            "missing; a new metric needs worst, label and group",
                        )
            worst = entry.get("worst")
            if worst is not None and worst not in ("min", "max"):
                self.fail(f"{key}.worst", f"expected min or max, got {_kind(worst)}")
            group = entry.get("group")
            if group is not None and not _IDENT.fullmatch(
                self.string(group, f"{key}.group")
            ):
                self.fail(
                    f"{key}.group", "expected a group name of letters, digits and _"
                )
            digits = entry.get("digits")
            scale = entry.get("scale")
            integer = entry.get("integer")
            updates[name] = MetricUpdate(
                worst=worst,
                label=None
                if "label" not in entry
                else self.string(entry["label"], f"{key}.label"),
                group=group,
                digits=None
                if digits is None
                else self.integer(digits, f"{key}.digits", minimum=0),
                scale=None
                if scale is None
                else self.number(scale, f"{key}.scale", positive=True),
                patterns=tuple(
                    self.regex(p, f"{key}.patterns[{i}]")
                    for i, p in enumerate(
                        self.str_list(entry.get("patterns"), f"{key}.patterns")
                    )
                ),
                nested_keys=tuple(
                    self.str_list(entry.get("nested_keys"), f"{key}.nested_keys")
                ),
                integer=None
                if integer is None
                else self.boolean(integer, f"{key}.integer"),
            )
        return BUILTIN.extended(updates)

    def thresholds(self, value: Any) -> dict[str, dict[ThresholdRef, str]]:
        out: dict[str, dict[ThresholdRef, str]] = {}
        for b, raw in self.per_test(value, "thresholds").items():
            claims: dict[ThresholdRef, str] = {}
            for ref, metric in self.mapping(raw, f"thresholds.{b}").items():
                key = f"thresholds.{b}.{ref}"
                match = _THRESHOLD_REF.fullmatch(ref.strip())
                if match is None:
                    self.fail(key, "expected SYMBOL or SYMBOL[inner_key]")
                symbol, _, inner = match.groups()
                claims[(symbol, inner)] = self.metric_key(self.string(metric, key), key)
            out[b] = claims
        return out

    def policies(self, value: Any) -> dict[str, ThresholdPolicy]:
        out: dict[str, ThresholdPolicy] = {}
        for group, raw in self.mapping(value, "threshold_policy").items():
            key = f"threshold_policy.{group}"
            self.group(group, key, extra=("default",))
            out[group] = self.policy(raw, key)
        return out

    def policy(self, raw: Any, key: str) -> ThresholdPolicy:
        expected = "expected worst, slack:P (P >= 0) or predict:A (0 < A < 1)"
        if not isinstance(raw, str):
            self.fail(key, f"{expected}, got {_kind(raw)}")
        text = raw.strip()
        if text == "worst":
            return ThresholdPolicy("worst")
        kind, sep, arg = text.partition(":")
        if not sep or kind not in ("slack", "predict"):
            self.fail(key, f"{expected}, got {raw!r}")
        try:
            number = float(arg)
        except ValueError:
            self.fail(key, f"{expected}, got {raw!r}")
        if kind == "slack" and not number >= 0:
            self.fail(key, f"{expected}, got {raw!r}")
        if kind == "predict" and not 0 < number < 1:
            self.fail(key, f"{expected}, got {raw!r}")
        return ThresholdPolicy("slack" if kind == "slack" else "predict", number)

    def slacks(self, value: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        known = (*self.registry.groups, *self.registry.keys)
        for name, raw in self.mapping(value, "ci_slack").items():
            key = f"ci_slack.{name}"
            if name not in known:
                self.fail(
                    key, f"unknown group or metric {name!r}{closest(name, known)}"
                )
            out[name] = self.number(raw, key, positive=True)
        return out

    # -- metric_sources

    def source_path(self, value: Any, key: str) -> str:
        text = self.string(value, key).strip()
        if "::" in text:
            file, _, dotted = text.partition("::")
            if not file.strip():
                self.fail(key, "expected FILE::dotted.path with a file before ::")
            self.rel_path(file.strip(), key, "file")
        else:
            dotted = text
        self.dotted(dotted.strip(), key)
        return text

    def dotted(self, text: str, key: str) -> None:
        parts = text.split(".")
        if not text or any(not p for p in parts):
            self.fail(
                key, f"expected a dotted path such as summary.accuracy, got {text!r}"
            )
        if "__len__" in parts[:-1]:
            self.fail(key, "expected .__len__ only at the end of the path")

    def counts(self, value: Any, key: str) -> CountSources | None:
        if value is None:
            return None
        data = self.mapping(value, key)
        self.known_keys(data, ("total", "ok"), key)
        return CountSources(
            total=None
            if data.get("total") is None
            else self.source_path(data["total"], f"{key}.total"),
            ok=None
            if data.get("ok") is None
            else self.source_path(data["ok"], f"{key}.ok"),
        )

    def expected(self, value: Any, key: str) -> int | dict[str, int] | None:
        if value is None:
            return None
        if isinstance(value, dict):
            return {
                self.group(g, f"{key}.{g}"): self.integer(n, f"{key}.{g}", minimum=1)
                for g, n in self.mapping(value, key).items()
            }
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(
                key,
                "expected an integer or a mapping of group to integer, "
                f"got {_kind(value)}",
            )
        return self.integer(value, key, minimum=1)

    def constants(self, value: Any, key: str) -> list[str]:
        names = self.str_list(value, key)
        for i, name in enumerate(names):
            if not _THRESHOLD_REF.fullmatch(name):
                self.fail(
                    f"{key}[{i}]",
                    f"expected a constant name (or NAME[inner_key]), got {name!r}",
                )
        return names

    def source(self, value: Any, key: str, parent: MetricSource | None) -> MetricSource:
        data = self.mapping(value, key)
        self.known_keys(data, _VARIANT_KEYS if parent else _SOURCE_KEYS, key)
        base = parent or MetricSource()
        get = data.get
        paths = dict(base.paths)
        for metric, entry in self.mapping(get("paths"), f"{key}.paths").items():
            sub = f"{key}.paths.{metric}"
            paths[self.metric_key(metric, sub)] = self.source_path(entry, sub)
        by_group = dict(base.sample_counts_by_group)
        for group, entry in self.mapping(
            get("sample_counts_by_group"), f"{key}.sample_counts_by_group"
        ).items():
            sub = f"{key}.sample_counts_by_group.{group}"
            counts = self.counts(entry, sub)
            if counts is not None:
                by_group[self.group(group, sub)] = counts
        context = get("context_vars")
        source = MetricSource(
            json_file=self.path_or(
                get("json_file"), f"{key}.json_file", base.json_file
            ),
            paths=paths,
            sample_counts=self.counts(get("sample_counts"), f"{key}.sample_counts")
            if "sample_counts" in data
            else base.sample_counts,
            sample_counts_by_group=by_group,
            expected_samples=self.expected(
                get("expected_samples"), f"{key}.expected_samples"
            )
            if "expected_samples" in data
            else base.expected_samples,
            ignored_constants=[
                *base.ignored_constants,
                *self.constants(get("ignored_constants"), f"{key}.ignored_constants"),
            ],
            threshold_file=self.path_or(
                get("threshold_file"), f"{key}.threshold_file", base.threshold_file
            ),
            observation_validity=self.opt_source(
                get("observation_validity"),
                f"{key}.observation_validity",
                base.observation_validity,
            ),
            allowed_pytest_failure=self.opt_source(
                get("allowed_pytest_failure"),
                f"{key}.allowed_pytest_failure",
                base.allowed_pytest_failure,
            ),
            context_vars=base.context_vars
            if context is None
            else self.str_list(context, f"{key}.context_vars"),
        )
        if parent is not None:
            return self.variant_fields(data, key, source)
        variants: dict[str, MetricSource] = {}
        for name, raw in self.mapping(get("variants"), f"{key}.variants").items():
            sub = f"{key}.variants.{name}"
            if not _IDENT.fullmatch(name):
                self.fail(sub, "expected a variant name of letters, digits and _")
            variants[name] = self.source(raw, sub, source)
        return replace(source, variants=variants)

    def variant_fields(
        self, data: dict[str, Any], key: str, source: MetricSource
    ) -> MetricSource:
        override = data.get("stage_base_override")
        if override is not None and not _IDENT.fullmatch(
            self.string(override, f"{key}.stage_base_override")
        ):
            self.fail(
                f"{key}.stage_base_override",
                "expected a base name of letters, digits and _",
            )
        pattern = data.get("constant_filter")
        return replace(
            source,
            constant_filter=None
            if pattern is None
            else self.regex(pattern, f"{key}.constant_filter"),
            stage_base_override=override,
            omit_variant_suffix=self.boolean(
                data.get("omit_variant_suffix", False), f"{key}.omit_variant_suffix"
            ),
        )

    def path_or(self, value: Any, key: str, default: str | None) -> str | None:
        return default if value is None else self.rel_path(value, key)

    def opt_source(self, value: Any, key: str, default: str | None) -> str | None:
        return default if value is None else self.source_path(value, key)


__all__ = [
    "CONFIG_NAME",
    "STAGES_NAME",
    "CountSources",
    "MetricSource",
    "ModelConfig",
    "ThresholdPolicy",
    "list_models",
    "load_config_file",
    "load_model",
    "load_yaml",
    "split_source",
]
