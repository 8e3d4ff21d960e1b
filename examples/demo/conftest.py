"""Fixtures of the demo suite, in the style of a real model-serving CI suite.

The "server" is a real subprocess started once per module, the way CI suites
start a model server; the calibration must start it again for every repeat
and never leave it running.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


class FakeServer:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.port = 30000 + proc.pid % 1000

    def write_log(self, line: str) -> None:
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def noise(name: str) -> random.Random:
    """Values vary from repeat to repeat, the same way in every run."""
    repeat = os.environ.get("TUNE_CI_REPEAT", "0")
    seed = os.environ.get("DEMO_SEED", "7")
    return random.Random(f"{seed}:{name}:{repeat}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    logdir = tmp_path_factory.mktemp("server")
    log = logdir / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    srv = FakeServer(proc, log)
    srv.write_log(f"server started pid={proc.pid}")
    # Health polling prints this while the server comes up: it is no crash.
    srv.write_log("health check: Connection refused, retrying")
    time.sleep(0.05)
    srv.write_log("server ready")
    yield srv
    proc.terminate()
    proc.wait(timeout=10)
    srv.write_log("server stopped")
