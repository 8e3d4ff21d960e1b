"""The NVML backend, through the official bindings (``nvidia-ml-py``, ``pynvml``).

No ``nvidia-smi`` text is parsed. Where the library or the driver is missing
the backend is replaced by a disabled one with a one-line notice, so a CPU host
runs with the gate off instead of failing.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .backend import Backend
from .backend import DisabledBackend
from .backend import GpuInfo
from .backend import GpuPollError
from .backend import GpuProcess


_MIB = 1024 * 1024


def _text(value: Any) -> str:
    # Old bindings return bytes, current ones str.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _mib(value: Any) -> int | None:
    if value is None:
        return None
    return int(value) // _MIB


class NvmlBackend:
    """Polls NVML; built only by :func:`open_nvml` once ``nvmlInit`` succeeded."""

    # TODO: in a container without the host PID namespace NVML's pids do not
    # match ours, so our own processes look foreign (safe: waited on, never
    # signalled); map them through /proc/<pid>/status NSpid if that bites.

    name = "nvml"
    enabled = True
    notice: str | None = None

    def __init__(self, nvml: ModuleType) -> None:
        self._nvml = nvml

    def poll(self) -> list[GpuInfo]:
        nv = self._nvml
        try:
            gpus: list[GpuInfo] = []
            for index in range(int(nv.nvmlDeviceGetCount())):
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                memory = nv.nvmlDeviceGetMemoryInfo(handle)
                procs = tuple(
                    GpuProcess(int(p.pid), _mib(getattr(p, "usedGpuMemory", None)))
                    for p in nv.nvmlDeviceGetComputeRunningProcesses(handle)
                )
                gpus.append(
                    GpuInfo(
                        index=index,
                        name=_text(nv.nvmlDeviceGetName(handle)),
                        memory_total_mib=_mib(memory.total) or 0,
                        memory_used_mib=_mib(memory.used) or 0,
                        processes=procs,
                    )
                )
        except nv.NVMLError as exc:
            raise GpuPollError(f"NVML poll failed: {exc}") from None
        return gpus

    def driver_version(self) -> str | None:
        try:
            return _text(self._nvml.nvmlSystemGetDriverVersion())
        except self._nvml.NVMLError:
            return None


def open_nvml(explicit: bool) -> Backend:
    """Initialise NVML; a disabled backend with a notice when that fails."""
    asked = " (asked for nvml)" if explicit else ""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        return DisabledBackend(
            "nvml",
            f"GPU gate off{asked}: the NVML bindings are not installed "
            "(pip install nvidia-ml-py)",
        )
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return DisabledBackend("nvml", f"GPU gate off{asked}: no NVIDIA driver ({exc})")
    except OSError as exc:  # a broken libnvml can fail to load outside NVMLError
        return DisabledBackend("nvml", f"GPU gate off{asked}: NVML failed ({exc})")
    return NvmlBackend(nvml)
