"""Which physical GPUs a calibration may use, and how a repeat sees them.

The pool is the caller's ``CUDA_VISIBLE_DEVICES`` when it is set, otherwise
every GPU the backend reports, minus ``gpu_exclude`` (physical indices). With an
outer ``CUDA_VISIBLE_DEVICES=2,3,5`` the pool is physical [2, 3, 5]; a repeat
given physical [3, 5] must see ``CUDA_VISIBLE_DEVICES=1,2``, the positions in
the outer list, because CUDA renumbers from the outer list.

Physical indices are NVML's, which follow the PCI bus order; CUDA numbers the
same way only with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so :meth:`GpuPool.env`
sets it for the repeat.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import TuneError
from .backend import GpuInfo


@dataclass(frozen=True)
class GpuPool:
    """``visible``: the outer ``CUDA_VISIBLE_DEVICES`` as physical indices."""

    visible: tuple[int, ...] | None = None
    exclude: frozenset[int] = frozenset()

    @classmethod
    def from_env(
        cls,
        exclude: Iterable[int] = (),
        environ: Mapping[str, str] | None = None,
    ) -> GpuPool:
        env = os.environ if environ is None else environ
        raw = env.get("CUDA_VISIBLE_DEVICES")
        visible = None if raw is None else parse_visible(raw)
        return cls(visible, frozenset(exclude))

    def allows(self, index: int) -> bool:
        if index in self.exclude:
            return False
        return self.visible is None or index in self.visible

    def members(self, gpus: Iterable[GpuInfo]) -> list[GpuInfo]:
        """The polled GPUs in the pool, in pool order (outer list order if set)."""
        allowed = [g for g in gpus if self.allows(g.index)]
        order = {index: pos for pos, index in enumerate(self.visible or ())}
        return sorted(allowed, key=lambda g: order.get(g.index, g.index))

    def visible_devices(self, chosen: Sequence[int]) -> str:
        """The ``CUDA_VISIBLE_DEVICES`` value that shows exactly ``chosen``."""
        for index in chosen:
            if not self.allows(index):
                raise TuneError(f"GPU {index} is not in the pool {self.describe()}")
        if self.visible is None:
            return ",".join(str(i) for i in chosen)
        return ",".join(str(self.visible.index(i)) for i in chosen)

    def env(self, chosen: Sequence[int]) -> dict[str, str]:
        """Environment variables a repeat on ``chosen`` needs."""
        return {
            "CUDA_VISIBLE_DEVICES": self.visible_devices(chosen),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }

    def describe(self) -> str:
        base = (
            "all GPUs"
            if self.visible is None
            else "CUDA_VISIBLE_DEVICES=" + ",".join(str(i) for i in self.visible)
        )
        if self.exclude:
            base += " minus gpu_exclude " + ",".join(
                str(i) for i in sorted(self.exclude)
            )
        return base


def parse_visible(raw: str) -> tuple[int, ...]:
    """Parse an outer ``CUDA_VISIBLE_DEVICES``; an empty value means no GPU."""
    text = raw.strip()
    if not text:
        return ()
    indices: list[int] = []
    for entry in (part.strip() for part in text.split(",")):
        if entry.startswith(("GPU-", "MIG-")):
            raise TuneError(
                f"CUDA_VISIBLE_DEVICES={raw}: UUID entries ({entry}) are not "
                "supported; use physical indices such as 0,1"
            )
        if not entry.isdigit():
            raise TuneError(
                f"CUDA_VISIBLE_DEVICES={raw}: expected comma-separated GPU "
                f"indices, got {entry!r}"
            )
        index = int(entry)
        if index in indices:
            raise TuneError(f"CUDA_VISIBLE_DEVICES={raw}: GPU {index} listed twice")
        indices.append(index)
    return tuple(indices)
