"""A simulated GPU host read from a JSON file at every poll.

Tests and dry-runs script GPU states by rewriting the file (atomically). The
format is documented in ``docs/gpus.md``::

    {"driver": "sim", "gpus": [{"index": 0, "name": "NVIDIA H20",
      "memory_total_mib": 97871, "memory_used_mib": 512,
      "processes": [{"pid": 4242, "used_mib": 17408}]}]}

A listed process whose pid no longer exists on this machine is dropped and its
``used_mib`` is taken off the GPU's used memory, so ending a real process
frees its simulated memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import procs
from ..errors import ConfigError
from ..errors import closest
from .backend import GpuInfo
from .backend import GpuPollError
from .backend import GpuProcess


_TOP_KEYS = ("gpus", "driver")
_GPU_KEYS = ("index", "name", "memory_total_mib", "memory_used_mib", "processes")
_PROC_KEYS = ("pid", "used_mib")
DEFAULT_NAME = "Simulated GPU"
DEFAULT_DRIVER = "sim"


class SimBackend:
    name = "sim"
    enabled = True
    notice: str | None = None

    def __init__(self, path: Path) -> None:
        self.path = path

    def check(self) -> None:
        """Read the file once; raises :class:`ConfigError` when it is malformed."""
        self._load()

    def poll(self) -> list[GpuInfo]:
        try:
            gpus, _driver = self._load()
        except ConfigError as exc:
            raise GpuPollError(str(exc)) from None
        return [_drop_dead(gpu) for gpu in gpus]

    def driver_version(self) -> str | None:
        try:
            return self._load()[1]
        except ConfigError:
            return None

    def _load(self) -> tuple[list[GpuInfo], str]:
        where = str(self.path)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(where, "", "simulated GPU file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(where, "", f"unreadable ({exc})") from None
        except ValueError as exc:
            raise ConfigError(where, "", f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(where, "", "expected a JSON object with key 'gpus'")
        _no_unknown(where, "", data, _TOP_KEYS)
        driver = data.get("driver", DEFAULT_DRIVER)
        if not isinstance(driver, str):
            raise ConfigError(where, "driver", f"expected a string, got {driver!r}")
        raw = data.get("gpus")
        if not isinstance(raw, list):
            raise ConfigError(where, "gpus", f"expected a list, got {_kind(raw)}")
        gpus = [_gpu(where, f"gpus[{i}]", item) for i, item in enumerate(raw)]
        seen: set[int] = set()
        for i, gpu in enumerate(gpus):
            if gpu.index in seen:
                raise ConfigError(
                    where, f"gpus[{i}].index", f"index {gpu.index} listed twice"
                )
            seen.add(gpu.index)
        return sorted(gpus, key=lambda g: g.index), driver


def _drop_dead(gpu: GpuInfo) -> GpuInfo:
    dead = [p for p in gpu.processes if not procs.pid_alive(p.pid)]
    if not dead:
        return gpu
    return GpuInfo(
        index=gpu.index,
        name=gpu.name,
        memory_total_mib=gpu.memory_total_mib,
        memory_used_mib=max(
            0, gpu.memory_used_mib - sum(p.used_mib or 0 for p in dead)
        ),
        processes=tuple(p for p in gpu.processes if p not in dead),
    )


def _gpu(where: str, key: str, item: Any) -> GpuInfo:
    if not isinstance(item, dict):
        raise ConfigError(where, key, f"expected an object, got {_kind(item)}")
    _no_unknown(where, key, item, _GPU_KEYS)
    name = item.get("name", DEFAULT_NAME)
    if not isinstance(name, str):
        raise ConfigError(where, f"{key}.name", f"expected a string, got {name!r}")
    raw_procs = item.get("processes", [])
    if not isinstance(raw_procs, list):
        raise ConfigError(
            where, f"{key}.processes", f"expected a list, got {_kind(raw_procs)}"
        )
    processes = tuple(
        _process(where, f"{key}.processes[{j}]", p) for j, p in enumerate(raw_procs)
    )
    return GpuInfo(
        index=_count(where, key, item, "index"),
        name=name,
        memory_total_mib=_count(where, key, item, "memory_total_mib"),
        memory_used_mib=_count(where, key, item, "memory_used_mib"),
        processes=processes,
    )


def _process(where: str, key: str, item: Any) -> GpuProcess:
    if not isinstance(item, dict):
        raise ConfigError(where, key, f"expected an object, got {_kind(item)}")
    _no_unknown(where, key, item, _PROC_KEYS)
    return GpuProcess(
        pid=_count(where, key, item, "pid"),
        used_mib=_count(where, key, item, "used_mib"),
    )


def _count(where: str, key: str, item: dict[str, Any], name: str) -> int:
    if name not in item:
        raise ConfigError(where, f"{key}.{name}", "missing (expected an integer)")
    value = item[name]
    # bool is an int in Python; true/false in the file is a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            where, f"{key}.{name}", f"expected an integer >= 0, got {value!r}"
        )
    return value


def _no_unknown(
    where: str, key: str, item: dict[str, Any], known: tuple[str, ...]
) -> None:
    for name in item:
        if name not in known:
            path = f"{key}.{name}" if key else str(name)
            raise ConfigError(
                where,
                path,
                f"unknown key (expected one of {', '.join(known)})"
                + closest(str(name), known),
            )


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
