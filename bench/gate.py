"""Figure 4: from GPU memory being freed to the repeat starting.

One simulated GPU starts busy (``memory_used_mib`` 50000, over the default
2048 MiB limit), so the gate waits before the repeat. Once ``run.log`` shows
the gate waiting, the bench waits a phase offset (spread over the gate's 1 s
poll interval) and rewrites the sim file with 300 MiB used, noting the
instant. The test writes ``time.time()`` as its first statement; the latency
is the difference. One calibration per trial (``--tune-skip-precheck``: the
precheck would refuse a busy GPU before the gate is reached).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from common import NO_CACHE
from common import Context
from common import Figure
from common import bench_env
from common import median
from common import pytest_cmd
from common import run
from common import sim_gpus
from common import spread
from common import write_project


MODEL = "gate"
BUSY_MIB = 50000
FREE_MIB = 300
POLL_S = 1.0  # the gate's DEFAULT_POLL_S
CONFIG = """
name: gate
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
gpu_wait_s: 60
metric_sources:
  test_gate_ci.py:
    json_file: "test_gate0/res.json"
    paths: {accuracy: "acc"}
"""
FILES = {
    "suite/test_gate_ci.py": """
        import json
        import os
        import time
        from pathlib import Path

        GATE_MIN_ACCURACY = 0.5


        def test_gate(tmp_path):
            started = time.time()
            run_dir = Path(os.environ["TUNE_CI_RUN_DIR"])
            (run_dir / "test-started").write_text(repr(started))
            (tmp_path / "res.json").write_text(json.dumps({"acc": 0.7}))
    """,
}


def _wait_for(path: Path, text: str, proc: subprocess.Popen[str], limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"calibration exited {proc.returncode} before the gate")
        try:
            if text in path.read_text(encoding="utf-8"):
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{path} never showed {text!r}")


def _trial(ctx: Context, root: Path, i: int, phase: float) -> float:
    gpus = root / "gpus.json"
    sim_gpus(gpus, 1, used_mib=BUSY_MIB)
    out = root / "runs" / f"t{i}"
    cmd = pytest_cmd(
        "--tune-model",
        MODEL,
        "--tune-repeats",
        "1",
        "--tune-gpus",
        f"sim:{gpus}",
        "--tune-skip-precheck",
        "--tune-output-dir",
        str(out),
        "-q",
        *NO_CACHE,
    )
    with subprocess.Popen(
        cmd,
        cwd=root,
        env=bench_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        _wait_for(out / "run.log", "waiting for 1 free GPU", proc, 60)
        time.sleep(phase)
        sim_gpus(gpus, 1, used_mib=FREE_MIB)
        dropped = time.time()
        output, _ = proc.communicate(timeout=120)
    with open(ctx.log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}  # rc={proc.returncode}\n{output[-3000:]}\n")
    if proc.returncode != 0:
        raise RuntimeError(
            f"gate trial {i} exited {proc.returncode}:\n{output[-2000:]}"
        )
    started = float((out / "test-started").read_text())
    return started - dropped


def bench(ctx: Context) -> list[Figure]:
    root = write_project(ctx.work / "gate", MODEL, CONFIG, FILES)
    run(pytest_cmd("--tune-model", MODEL, "--tune-discover", *NO_CACHE), root, ctx)
    trials = 3 if ctx.quick else 6
    latencies = []
    for i in range(trials):
        phase = POLL_S * i / trials
        latencies.append(_trial(ctx, root, i, phase))
        ctx.say(f"gate: trial {i + 1}/{trials} {latencies[-1]:.2f}s")
    return [
        Figure(
            "4",
            "GPU memory freed -> repeat's test starts (worst)",
            max(latencies),
            "s",
            "≤ 1.5 s",
            max(latencies) <= 1.5,
            f"median {median(latencies):.2f} s; {spread(latencies)} s; "
            f"gate polls every {POLL_S:g} s",
        ),
    ]
