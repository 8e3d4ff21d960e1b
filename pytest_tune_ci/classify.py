"""Classify how an attempt ended, from what it printed and how it failed.

Infrastructure classes are retried; ``threshold`` (assertions failed, metrics
present) is a valid observation; ``error`` is reported and not retried.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


OK = "ok"
THRESHOLD = "threshold"
OOM = "oom"
KILLED = "killed"
SEGFAULT = "segfault"
CRASH = "crash"
TIMEOUT = "timeout"
GPU_NOT_CLEAR = "gpu_not_clear"
ERROR = "error"

INFRA = frozenset({OOM, KILLED, SEGFAULT, CRASH, TIMEOUT, GPU_NOT_CLEAR})

# Conservative on purpose: none of these is printed by a healthy server. The
# legacy list also had "Connection refused" and "Address already in use", which
# a health poll prints while a server starts; they killed good runs.
DEFAULT_CRASH_SIGNATURES = (
    r"Fatal Python error",
    r"CUDA error: an illegal memory access",
    r"Child process died",
    r"All workers failed",
    r"Router failed to start",
    r"Server process exited",
    r"worker crashed",
)

_OOM = re.compile(
    r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory"
    r"|cudaErrorMemoryAllocation"
)
_KILLED = re.compile(
    r"died with <Signals\.SIGKILL: 9>|exit (?:code|status) 137\b"
    r"|returncode[ =:]+-9\b|signal 9 \(SIGKILL\)"
)
_SEGFAULT = re.compile(
    r"Segmentation fault|died with <Signals\.SIGSEGV: 11>"
    r"|exit (?:code|status) 139\b|returncode[ =:]+-11\b"
)


@dataclass(frozen=True)
class Signatures:
    patterns: tuple[re.Pattern[str], ...]

    @classmethod
    def build(cls, extra: Iterable[str] = ()) -> Signatures:
        return cls(tuple(re.compile(p) for p in (*DEFAULT_CRASH_SIGNATURES, *extra)))

    def search(self, text: str) -> str | None:
        """The first line of ``text`` a signature matches, or None."""
        for pattern in self.patterns:
            match = pattern.search(text)
            if match:
                start = text.rfind("\n", 0, match.start()) + 1
                end = text.find("\n", match.end())
                line = text[start : end if end != -1 else len(text)]
                return line.strip()[:300]
        return None


def classify_text(text: str) -> tuple[str, str] | None:
    """An infrastructure class recognised in a failure's output, if any."""
    for name, pattern in ((OOM, _OOM), (KILLED, _KILLED), (SEGFAULT, _SEGFAULT)):
        match = pattern.search(text)
        if match:
            return name, match.group(0)
    return None
