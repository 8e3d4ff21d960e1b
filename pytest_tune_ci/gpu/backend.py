"""GPU records and the backend protocol every GPU source implements.

A backend answers one question per poll: which GPUs does this host have, how
much memory is used on each, and which compute processes hold them. Indices
are *physical* (NVML, PCI bus order), never positions in a
``CUDA_VISIBLE_DEVICES`` list; :mod:`.pool` does that mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Protocol
from typing import runtime_checkable

from ..errors import TuneError


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on one GPU; ``used_mib`` is None when the driver won't say."""

    pid: int
    used_mib: int | None


@dataclass(frozen=True)
class GpuInfo:
    index: int  # physical index
    name: str
    memory_total_mib: int
    memory_used_mib: int
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)


class GpuPollError(TuneError):
    """One poll failed (driver error, malformed sim file); the caller may retry."""


@runtime_checkable
class Backend(Protocol):
    """A source of GPU state. ``enabled`` False means the gate is off."""

    @property
    def name(self) -> str: ...

    @property
    def enabled(self) -> bool: ...

    @property
    def notice(self) -> str | None: ...

    def poll(self) -> list[GpuInfo]:
        """Every GPU of the host, in index order; raises :class:`GpuPollError`."""
        ...

    def driver_version(self) -> str | None: ...


@dataclass(frozen=True)
class DisabledBackend:
    """The gate is off: no driver, ``--tune-gpus none``, or a CPU-only suite."""

    name: str
    notice: str | None
    enabled: bool = False

    def poll(self) -> list[GpuInfo]:
        return []

    def driver_version(self) -> str | None:
        return None
