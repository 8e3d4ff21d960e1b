"""Stage records: what stages.yaml holds, and selecting stages by token.

A *stage* is one (test file, variant, metric group) combination: the unit the
report has a section for. Its metrics say which threshold literal in which file
each value calibrates, and where the value is read from the result JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Literal


Worst = Literal["min", "max"]
Key = int | str


@dataclass(frozen=True)
class Location:
    """Where one threshold literal lives in a Python file.

    ``outer_key`` is the outer key of a nested dict (the concurrency level of
    ``_X_P95 = {16: {"throughput_qps": 1.3}}``), ``inner_key`` its inner key.
    A bare constant has neither.
    """

    file: str  # path relative to the rootdir, POSIX separators
    symbol: str
    outer_key: Key | None = None
    inner_key: str | None = None
    line: int = 0

    @property
    def source(self) -> str:
        """The legacy ``source`` string: ``NAME`` or ``NAME['key']``."""
        if self.inner_key is None:
            return self.symbol
        return f"{self.symbol}[{self.inner_key!r}]"

    @property
    def ref(self) -> str:
        """Full reference with the outer key: ``NAME[16]['key']``."""
        text = self.symbol
        if self.outer_key is not None:
            text += f"[{self.outer_key!r}]"
        if self.inner_key is not None:
            text += f"[{self.inner_key!r}]"
        return text


@dataclass(frozen=True)
class JsonRef:
    """A value in a result JSON: ``json_file`` relative to the basetemp.

    ``json_path`` is dotted; a trailing ``.__len__`` counts a list's items.
    """

    json_file: str | None
    json_path: str


@dataclass(frozen=True)
class Display:
    label: str
    scale: float = 1
    digits: int = 2


@dataclass(frozen=True)
class StageMetric:
    key: str
    location: Location
    worst: Worst
    display: Display
    json_file: str | None = None
    json_path: str | None = None
    status: Literal["OK", "NEEDS_CONFIG"] = "OK"
    integer: bool = False  # the literal in the source is an int
    current: int | float | None = None  # the literal's value when last read

    @property
    def source(self) -> str:
        return self.location.source

    @property
    def ref(self) -> JsonRef | None:
        if self.json_path is None:
            return None
        return JsonRef(self.json_file, self.json_path)


@dataclass(frozen=True)
class Uncalibrated:
    """A threshold entry discovery found but a calibration never measures."""

    location: Location
    reason: str


@dataclass
class Stage:
    key: str
    test: str  # test file relative to the rootdir
    title: str
    group: str
    base: str
    variant: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    context_vars: list[str] = field(default_factory=list)
    context: dict[str, int | float | str | None] = field(default_factory=dict)
    concurrency: Key | None = None
    gpus: int = 1
    pytest_extra_args: list[str] = field(default_factory=list)
    test_file_sha256: str = ""
    test_logic_sha256: str = ""
    threshold_file: str | None = None
    expected_samples: int | None = None
    sample_counts: dict[str, JsonRef] | None = None  # keys "total" and "ok"
    metrics: dict[str, StageMetric] = field(default_factory=dict)
    not_calibrated: list[Uncalibrated] = field(default_factory=list)

    @property
    def aliases(self) -> list[str]:
        """The base tokens that select this stage (``mmmu``; ``tts`` too)."""
        names = [self.base if self.variant is None else f"{self.base}_{self.variant}"]
        if self.variant is not None:
            names.append(self.base)
        return names

    @property
    def thresholds_file(self) -> str:
        """The file whose literals this stage's thresholds are written to."""
        return self.threshold_file or self.test
