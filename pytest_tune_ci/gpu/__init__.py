"""GPU backends (NVML, simulated, none), the pool, the gate and leases.

``make_backend`` turns the resolved ``--tune-gpus`` string into a
:class:`Backend`; everything else takes a backend and never asks which kind it
is. See ``docs/gpus.md`` for the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import TuneError
from ..errors import closest
from .backend import Backend
from .backend import DisabledBackend
from .backend import GpuInfo
from .backend import GpuPollError
from .backend import GpuProcess
from .gate import DEFAULT_FREE_MIB
from .gate import DEFAULT_POLL_S
from .gate import DEFAULT_WAIT_S
from .gate import GPU_NOT_CLEAR
from .gate import CleanupResult
from .gate import Gate
from .gate import GateResult
from .gate import GpuState
from .gate import Holder
from .gate import calibration_pids
from .gate import classify
from .lease import HostLock
from .lease import LeaseManager
from .lease import host_lock
from .nvml import open_nvml
from .pool import GpuPool
from .sim import SimBackend


FORMS = ("nvml", "none", "sim:PATH")


def make_backend(
    spec: str | None,
    notice: Callable[[str], None] | None = None,
    *,
    base: Path | None = None,
) -> Backend:
    """The backend for ``spec`` (None: NVML when a driver is there, else off).

    A backend that runs with the gate off carries a one-line ``notice``; it is
    also passed to ``notice`` once, for the pytest header. A relative
    ``sim:PATH`` is taken from ``base`` (default: the current directory).
    Raises :class:`TuneError` for an unknown spec and :class:`ConfigError` for
    a missing or malformed sim file.
    """
    backend = _backend(spec, base)
    if notice is not None and backend.notice:
        notice(backend.notice)
    return backend


def _backend(spec: str | None, base: Path | None) -> Backend:
    if spec is None or not spec.strip():
        return open_nvml(explicit=False)
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind == "nvml" and not sep:
        return open_nvml(explicit=True)
    if kind == "none" and not sep:
        return DisabledBackend("none", f"GPU gate off (gpus={text})")
    if kind == "sim" and sep and rest.strip():
        path = Path(rest.strip()).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        backend = SimBackend(path)
        backend.check()
        return backend
    raise TuneError(
        f"unknown GPU backend {text!r}: expected one of {', '.join(FORMS)}"
        + closest(kind, ("nvml", "none", "sim"))
    )


def auto_workers(
    backend: Backend, pool: GpuPool, gpus_per_test: int, free_mib: int
) -> int | None:
    """Workers for xdist ``-n auto``: one per group of free GPUs, at least 1.

    None when the gate is off (or the poll fails): the caller then leaves
    ``-n auto`` to xdist, which uses the CPU count. Our own stale processes
    count as gone (the gate ends them); foreign ones make a GPU busy.
    """
    if not backend.enabled:
        return None
    try:
        states = classify(pool.members(backend.poll()), calibration_pids())
    except GpuPollError:
        return None
    free = sum(1 for s in states if s.free_after_cleanup(free_mib))
    return max(1, free // max(1, gpus_per_test))


__all__ = [
    "DEFAULT_FREE_MIB",
    "DEFAULT_POLL_S",
    "DEFAULT_WAIT_S",
    "FORMS",
    "GPU_NOT_CLEAR",
    "Backend",
    "CleanupResult",
    "DisabledBackend",
    "Gate",
    "GateResult",
    "GpuInfo",
    "GpuPollError",
    "GpuPool",
    "GpuProcess",
    "GpuState",
    "Holder",
    "HostLock",
    "LeaseManager",
    "SimBackend",
    "auto_workers",
    "calibration_pids",
    "classify",
    "host_lock",
    "make_backend",
]
