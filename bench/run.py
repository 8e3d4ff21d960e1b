"""Run the pytest-tune-ci benchmarks and print one table of figures.

    python bench/run.py            # everything (about 9 minutes on 2 cores)
    python bench/run.py --quick    # one round, fewer samples (about 4 minutes)
    python bench/run.py --only overhead,crash --rounds 3

Each figure is a ratio or a latency measured side by side in this one run;
alternatives are interleaved round by round and the table shows medians.
Projects are generated under a temporary directory (``--keep`` leaves it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import crash
import gate
import multigpu
import overhead
import scale
from common import Context
from common import Figure


BENCHES: dict[str, Callable[[Context], list[Figure]]] = {
    "overhead": overhead.bench,
    "multigpu": multigpu.bench,
    "crash": crash.bench,
    "gate": gate.bench,
    "scale": scale.bench,
}
HEADER = ["#", "figure", "value", "target", "verdict", "detail"]


def machine() -> list[str]:
    """The lines that say what these numbers were measured on."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    free = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False)
    mem = next((ln for ln in free.stdout.splitlines() if ln.startswith("Mem:")), "")
    import pytest

    return [
        f"nproc: {os.cpu_count()}",
        f"CPU: {cpu}",
        f"memory (free -h): {' '.join(mem.split()[:2])} total",
        f"Python {platform.python_version()}, pytest {pytest.__version__}, "
        f"{platform.system()} {platform.release()}",
    ]


def table(rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller")
    parser.add_argument(
        "--only", default="", help="comma-separated: " + ",".join(BENCHES)
    )
    parser.add_argument(
        "--rounds", type=int, default=0, help="rounds (default 3; 1 quick)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the generated projects"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHES)
    unknown = [n for n in chosen if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; expected {list(BENCHES)}")
    rounds = args.rounds or (1 if args.quick else 3)
    work = Path(tempfile.mkdtemp(prefix="tune-ci-bench-"))
    log = work / "commands.log"
    # Measure with bytecode caching on, as on a normal CI host (this machine
    # sets PYTHONDONTWRITEBYTECODE=1, which makes every pytest process
    # recompile and assertion-rewrite its plugins and test files); the caches
    # go to the work dir so nothing is written into the repository.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    print(f"work dir {work} (command log: {log})", flush=True)
    figures: list[Figure] = []
    notes: list[str] = []
    failed: list[str] = []
    start = time.perf_counter()
    for name in chosen:
        ctx = Context(work=work / name, quick=args.quick, rounds=rounds, log=log)
        ctx.work.mkdir(parents=True)
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            figures += BENCHES[name](ctx)
        except Exception:  # one broken benchmark must not hide the others
            failed.append(name)
            traceback.print_exc()
        notes += [f"{name}: {note}" for note in ctx.notes]
        print(f"== {name} took {time.perf_counter() - t0:.0f}s", flush=True)
    total = time.perf_counter() - start
    print()
    print("\n".join(machine()))
    print(f"rounds: {rounds}{' (quick)' if args.quick else ''}; total {total:.0f}s")
    print()
    print(table([f.cells() for f in figures]))
    if notes:
        print()
        print("\n".join(f"- {note}" for note in notes))
    if args.json:
        args.json.write_text(
            json.dumps([f.__dict__ for f in figures], indent=2), encoding="utf-8"
        )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        print(f"\nbenchmark(s) failed to run: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
