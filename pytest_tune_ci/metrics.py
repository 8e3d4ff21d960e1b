"""The metric registry: what each metric kind is, as data.

A metric kind says which way is worse (``min``: lower is worse, so the
worst-of-N is the minimum), how the report shows it, which stage group it
belongs to, and which threshold constants calibrate it: name patterns for
bare constants (``MMMU_MIN_ACCURACY``) and inner keys for nested dicts
(``_MMMU_P95[16]["throughput_qps"]``). A model config's ``metrics:`` section
extends the built-in registry without code changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace

from .stages import Display
from .stages import Worst


@dataclass(frozen=True)
class MetricSpec:
    key: str
    worst: Worst
    label: str
    group: str
    digits: int = 2
    scale: float = 1
    patterns: tuple[str, ...] = ()  # full-match regexes over the bare name
    nested_keys: tuple[str, ...] = ()  # inner dict keys that hold this metric
    integer: bool = False  # the metric counts things

    @property
    def display(self) -> Display:
        return Display(label=self.label, scale=self.scale, digits=self.digits)


@dataclass(frozen=True)
class MetricUpdate:
    """What a config's ``metrics:`` entry adds to or sets on a metric."""

    worst: Worst | None = None
    label: str | None = None
    group: str | None = None
    digits: int | None = None
    scale: float | None = None
    patterns: tuple[str, ...] = ()
    nested_keys: tuple[str, ...] = ()
    integer: bool | None = None


@dataclass(frozen=True)
class Registry:
    """Metric specs plus the ordered name rules that pick one for a constant.

    Rules are tried in order and the first full match wins, so a specific
    pattern (``WER_BELOW_50_CORPUS_MAX``) must come before a general one.
    Patterns a config adds go in front of the built-in ones.
    """

    specs: Mapping[str, MetricSpec]
    rules: tuple[tuple[str, str], ...]  # (pattern, metric key)
    _compiled: tuple[tuple[re.Pattern[str], str], ...] = field(
        default=(), repr=False, compare=False
    )

    def __post_init__(self) -> None:
        compiled = tuple((re.compile(p), key) for p, key in self.rules)
        object.__setattr__(self, "_compiled", compiled)

    def __contains__(self, key: object) -> bool:
        return key in self.specs

    def __getitem__(self, key: str) -> MetricSpec:
        return self.specs[key]

    def get(self, key: str) -> MetricSpec | None:
        return self.specs.get(key)

    @property
    def keys(self) -> list[str]:
        return list(self.specs)

    @property
    def groups(self) -> list[str]:
        """Stage groups in first-seen order."""
        return list(dict.fromkeys(spec.group for spec in self.specs.values()))

    def match_name(self, name: str) -> str | None:
        """The metric a bare constant calibrates, by its name; None if none.

        Leading underscores are ignored; derived names never match.
        """
        bare = name.lstrip("_")
        if is_derived_name(bare):
            return None
        for pattern, key in self._compiled:
            if pattern.fullmatch(bare):
                return key
        return None

    def match_nested(self, inner_key: str) -> str | None:
        """The metric an inner dict key (``"throughput_qps"``) holds."""
        for spec in self.specs.values():
            if inner_key in spec.nested_keys:
                return spec.key
        return None

    def extended(self, updates: Mapping[str, MetricUpdate]) -> Registry:
        """A registry with new metrics added and existing ones extended.

        A new metric needs ``worst``, ``label`` and ``group``; callers
        validate that (config.py reports it against the config file).
        """
        specs = dict(self.specs)
        added: list[tuple[str, str]] = []
        for key, upd in updates.items():
            old = specs.get(key)
            if old is None:
                if upd.worst is None or upd.label is None or upd.group is None:
                    raise ValueError(f"new metric {key!r} needs worst, label, group")
                old = MetricSpec(
                    key=key, worst=upd.worst, label=upd.label, group=upd.group
                )
            specs[key] = replace(
                old,
                worst=upd.worst or old.worst,
                label=upd.label if upd.label is not None else old.label,
                group=upd.group or old.group,
                digits=upd.digits if upd.digits is not None else old.digits,
                scale=upd.scale if upd.scale is not None else old.scale,
                integer=upd.integer if upd.integer is not None else old.integer,
                patterns=old.patterns + tuple(upd.patterns),
                nested_keys=old.nested_keys + tuple(upd.nested_keys),
            )
            added.extend((p, key) for p in upd.patterns)
        return Registry(specs=specs, rules=tuple(added) + self.rules)


def is_derived_name(name: str) -> bool:
    """Names of values the test derives from a reference, never thresholds.

    ``X_THRESHOLD = apply_wer_slack(X_MAX)`` is what the test asserts against;
    the calibrated value is ``X_MAX``. ``THRESHOLD_SLACK_HIGHER`` is the slack.
    """
    bare = name.lstrip("_")
    return bare.endswith("_THRESHOLD") or "THRESHOLD_SLACK_" in bare


def _spec(
    key: str,
    worst: Worst,
    label: str,
    group: str,
    digits: int,
    scale: float = 1,
    *,
    nested: bool = False,
    integer: bool = False,
) -> MetricSpec:
    return MetricSpec(
        key=key,
        worst=worst,
        label=label,
        group=group,
        digits=digits,
        scale=scale,
        nested_keys=(key,) if nested else (),
        integer=integer,
    )


_SPECS = (
    _spec("accuracy", "min", "Acc (%)", "accuracy", 2, 100),
    _spec("corpus_wer", "max", "Corpus WER (%)", "wer", 2, 100),
    _spec("per_sample_wer_max", "max", "Max per-sample WER (%)", "wer", 2, 100),
    _spec("wer_below_50_corpus", "max", "Corpus WER ≤50% (%)", "wer", 2, 100),
    _spec("n_above_50", "max", "Samples >50% WER", "wer", 0, integer=True),
    _spec("throughput_qps", "min", "Throughput (req/s)", "speed", 3, nested=True),
    _spec("output_tok_per_req_s", "min", "Output tok/req-s", "speed", 1, nested=True),
    _spec("latency_mean_s", "max", "Latency mean (s)", "speed", 3, nested=True),
    _spec("latency_p95_s", "max", "Latency p95 (s)", "speed", 3, nested=True),
    _spec("rtf_mean", "max", "RTF mean", "speed", 4, nested=True),
    _spec("rtf_p95", "max", "RTF p95", "speed", 4, nested=True),
    _spec("latency_max_s", "max", "Latency max (s)", "speed", 3),
    _spec("ttfa_p95_s", "max", "TTFA p95 (s)", "speed", 4),
    _spec("text_ttft_p95_s", "max", "Text TTFT p95 (s)", "speed", 4),
    _spec("inter_chunk_p95_s", "max", "Inter-chunk p95 (s)", "speed", 4),
    _spec(
        "completion_tokens_min",
        "min",
        "Min completion tokens",
        "speed",
        0,
        integer=True,
    ),
    _spec("prompt_tokens_min", "min", "Min prompt tokens", "speed", 0, integer=True),
    _spec("audio_duration_min_s", "min", "Min audio duration (s)", "speed", 3),
    _spec("failed_requests", "max", "Failed requests", "reliability", 0, integer=True),
    _spec("similarity_mean", "min", "Speaker sim mean", "similarity", 4),
    _spec("utmos_mean", "min", "UTMOS mean", "utmos", 4),
    _spec("cer_percent", "max", "CER (%)", "diarization", 2),
    _spec("cer_no_spk_percent", "max", "CER without speakers (%)", "diarization", 2),
    _spec("cp_cer_percent", "max", "cpCER (%)", "diarization", 2),
    _spec(
        "cer_no_spk_cp_valid_percent",
        "max",
        "CER without speakers, cp-valid (%)",
        "diarization",
        2,
    ),
    _spec("delta_cer_percent", "max", "CER delta (%)", "diarization", 2),
    _spec(
        "cer_no_spk_below_50_corpus",
        "max",
        "Corpus CER ≤50% without speakers (%)",
        "diarization",
        2,
    ),
    _spec(
        "speaker_timestamp_der_percent",
        "max",
        "Speaker timestamp DER (%)",
        "diarization",
        2,
    ),
    _spec(
        "n_above_50_pct_cer", "max", "Samples >50% CER", "diarization", 0, integer=True
    ),
    _spec(
        "cer_valid_samples", "min", "CER valid samples", "diarization", 0, integer=True
    ),
    _spec(
        "cp_cer_valid_samples",
        "min",
        "cpCER valid samples",
        "diarization",
        0,
        integer=True,
    ),
)

# Order matters: the first full match wins. Specific names come before the
# general ones they contain (WER_BELOW_50_CORPUS_MAX before any WER rule,
# CP_CER_VALID_SAMPLES_MIN before CER_VALID_SAMPLES_MIN before CER_PERCENT).
_RULES: tuple[tuple[str, str], ...] = (
    (r".*_ACC(?:URACY)?_MIN", "accuracy"),
    (r".*_MIN_ACCURACY", "accuracy"),
    (r".*WER_BELOW_50_CORPUS_MAX.*", "wer_below_50_corpus"),
    (r".*N_ABOVE_50_MAX.*", "n_above_50"),
    (r".*MAX_FAILED_REQUESTS.*", "failed_requests"),
    (r".*CER_NO_SPK_CP_VALID_PERCENT.*", "cer_no_spk_cp_valid_percent"),
    (r".*CER_NO_SPK_BELOW_50_PERCENT.*", "cer_no_spk_below_50_corpus"),
    (r".*CER_NO_SPK_PERCENT.*", "cer_no_spk_percent"),
    (r".*CP_CER_PERCENT.*", "cp_cer_percent"),
    (r".*DELTA_CER_PERCENT.*", "delta_cer_percent"),
    (r".*N_ABOVE_50_CER_(?:REF|MAX).*", "n_above_50_pct_cer"),
    (r".*SPEAKER_TIMESTAMP_DER_PERCENT_REF.*", "speaker_timestamp_der_percent"),
    (r".*CP_CER_VALID_SAMPLES_MIN.*", "cp_cer_valid_samples"),
    (r".*CER_VALID_SAMPLES_MIN.*", "cer_valid_samples"),
    (r".*CER_PERCENT.*", "cer_percent"),
    (r".*SIMILARITY.*_MIN", "similarity_mean"),
    (r".*UTMOS.*_REFERENCE", "utmos_mean"),
    (r".*WER_MAX_CORPUS.*", "corpus_wer"),
    (r".*WER_MAX_PER_SAMPLE.*", "per_sample_wer_max"),
    (r".*CORPUS_WER_MAX.*", "corpus_wer"),
    (r".*SAMPLE_WER_MAX.*", "per_sample_wer_max"),
    (r".*THROUGHPUT_(?:QPS|MIN).*", "throughput_qps"),
    (r".*OUTPUT_TOK_PER_REQ.*", "output_tok_per_req_s"),
    (r"(?=.*MIN).*PROMPT_TOKENS.*", "prompt_tokens_min"),
    (r"(?=.*MIN).*COMPLETION_TOKENS.*", "completion_tokens_min"),
    (r"(?=.*MIN).*AUDIO_DURATION.*", "audio_duration_min_s"),
    (r".*LATENCY_MEAN.*", "latency_mean_s"),
    (r".*LATENCY_P95.*", "latency_p95_s"),
    (r".*LATENCY_MAX.*", "latency_max_s"),
    (r".*RTF_MEAN.*", "rtf_mean"),
    (r".*RTF_P95.*", "rtf_p95"),
    (r"(?=.*P95).*TTFA.*", "ttfa_p95_s"),
    (r"(?=.*P95).*TEXT_TTFT.*", "text_ttft_p95_s"),
    (r"(?=.*P95).*INTER_CHUNK.*", "inter_chunk_p95_s"),
)


def _with_patterns(specs: Iterable[MetricSpec]) -> dict[str, MetricSpec]:
    out: dict[str, MetricSpec] = {}
    for spec in specs:
        mine = tuple(p for p, key in _RULES if key == spec.key)
        out[spec.key] = replace(spec, patterns=mine)
    return out


BUILTIN = Registry(specs=_with_patterns(_SPECS), rules=_RULES)


def default_registry() -> Registry:
    return BUILTIN


__all__ = [
    "BUILTIN",
    "MetricSpec",
    "MetricUpdate",
    "Registry",
    "default_registry",
    "is_derived_name",
]
