from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_tune_ci import atomic
from pytest_tune_ci.errors import ConfigError
from pytest_tune_ci.errors import TuneError
from pytest_tune_ci.gpu import GpuInfo
from pytest_tune_ci.gpu import GpuPollError
from pytest_tune_ci.gpu import GpuPool
from pytest_tune_ci.gpu import GpuProcess
from pytest_tune_ci.gpu import SimBackend
from pytest_tune_ci.gpu import auto_workers
from pytest_tune_ci.gpu import make_backend
from pytest_tune_ci.gpu.pool import parse_visible


MIB = 1024 * 1024


# -- a fake pynvml


class FakeNVMLError(Exception):
    pass


@dataclass
class FakeProc:
    pid: int
    usedGpuMemory: int | None


@dataclass
class FakeMemory:
    total: int
    used: int


def fake_pynvml(
    gpus: list[dict[str, Any]], *, init_error: bool = False, driver: Any = "550.54"
) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError  # type: ignore[attr-defined]

    def init() -> None:
        if init_error:
            raise FakeNVMLError("Driver Not Loaded")

    def handle(i: int) -> dict[str, Any]:
        if i >= len(gpus):
            raise FakeNVMLError("Invalid Argument")
        return gpus[i]

    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: h["name"]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: FakeMemory(h["total"], h["used"])  # type: ignore[attr-defined]
    mod.nvmlDeviceGetComputeRunningProcesses = lambda h: h["procs"]  # type: ignore[attr-defined]
    mod.nvmlSystemGetDriverVersion = lambda: driver  # type: ignore[attr-defined]
    return mod


def test_nvml_backend_polls_memory_and_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpus = [
        {"name": b"NVIDIA H20", "total": 97871 * MIB, "used": 512 * MIB, "procs": []},
        {
            "name": "NVIDIA H20",
            "total": 97871 * MIB,
            "used": 20000 * MIB,
            "procs": [FakeProc(4242, 17408 * MIB), FakeProc(4343, None)],
        },
    ]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpus, driver=b"550.54"))
    notices: list[str] = []
    backend = make_backend(None, notices.append)
    assert backend.name == "nvml"
    assert backend.enabled and backend.notice is None and notices == []
    assert backend.driver_version() == "550.54"
    assert backend.poll() == [
        GpuInfo(0, "NVIDIA H20", 97871, 512, ()),
        GpuInfo(
            1,
            "NVIDIA H20",
            97871,
            20000,
            (GpuProcess(4242, 17408), GpuProcess(4343, None)),
        ),
    ]


def test_nvml_error_during_poll_is_a_poll_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mod = fake_pynvml([])

    def broken() -> int:
        raise FakeNVMLError("GPU is lost")

    mod.nvmlDeviceGetCount = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    backend = make_backend("nvml")
    with pytest.raises(GpuPollError, match="NVML poll failed: GPU is lost"):
        backend.poll()


@pytest.mark.parametrize("spec", [None, "nvml", " NVML "])
def test_nvml_without_driver_turns_the_gate_off(
    monkeypatch: pytest.MonkeyPatch, spec: str | None
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error=True))
    notices: list[str] = []
    backend = make_backend(spec, notices.append)
    assert not backend.enabled
    assert backend.poll() == [] and backend.driver_version() is None
    assert backend.notice is not None and "\n" not in backend.notice
    assert backend.notice.startswith("GPU gate off")
    assert "no NVIDIA driver (Driver Not Loaded)" in backend.notice
    assert notices == [backend.notice]
    assert ("asked for nvml" in backend.notice) == (spec is not None)


def test_nvml_bindings_missing_turn_the_gate_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    backend = make_backend(None)
    assert not backend.enabled
    assert backend.notice == (
        "GPU gate off: the NVML bindings are not installed (pip install nvidia-ml-py)"
    )


def test_real_nvml_on_this_host_never_crashes() -> None:
    # Runs the real bindings: on a host without a driver this is the notice
    # path, on a GPU host a real poll.
    code = (
        "from pytest_tune_ci.gpu import make_backend\n"
        "b = make_backend(None)\n"
        "print(b.enabled, b.notice)\n"
        "print(len(b.poll()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    if first.startswith("False"):
        assert "GPU gate off" in first
    else:
        assert first == "True None"


def test_none_backend() -> None:
    notices: list[str] = []
    backend = make_backend("none", notices.append)
    assert backend.name == "none" and not backend.enabled
    assert notices == ["GPU gate off (gpus=none)"]


@pytest.mark.parametrize("spec", ["nvlm", "sim", "sim:", "cuda:0", "none:x"])
def test_unknown_spec_names_the_valid_forms(spec: str) -> None:
    with pytest.raises(TuneError, match=r"expected one of nvml, none, sim:PATH"):
        make_backend(spec)


def test_unknown_spec_suggests_the_closest() -> None:
    with pytest.raises(TuneError, match=r"did you mean 'nvml'"):
        make_backend("nvlm")


# -- the simulated backend


def write_sim(path: Path, gpus: list[dict[str, Any]], **top: Any) -> None:
    atomic.write_json(path, {"gpus": gpus, **top})


def sim_gpu(
    index: int, used: int = 512, procs: list[dict[str, int]] | None = None
) -> dict[str, Any]:
    return {
        "index": index,
        "name": "NVIDIA H20",
        "memory_total_mib": 97871,
        "memory_used_mib": used,
        "processes": procs or [],
    }


def test_sim_reads_the_file_at_every_poll(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    write_sim(path, [sim_gpu(1), sim_gpu(0, used=3000)], driver="550.1")
    backend = make_backend(f"sim:{path}")
    assert backend.name == "sim" and backend.enabled
    assert backend.driver_version() == "550.1"
    assert [(g.index, g.memory_used_mib) for g in backend.poll()] == [
        (0, 3000),
        (1, 512),
    ]
    write_sim(path, [sim_gpu(0, used=100)])
    assert [(g.index, g.memory_used_mib) for g in backend.poll()] == [(0, 100)]
    assert backend.driver_version() == "sim"


def test_sim_relative_path_uses_base(tmp_path: Path) -> None:
    write_sim(tmp_path / "hosts.json", [sim_gpu(0)])
    backend = make_backend("sim:hosts.json", base=tmp_path)
    assert isinstance(backend, SimBackend)
    assert backend.path == tmp_path / "hosts.json"


def test_sim_minimal_gpu_entry(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    path.write_text(
        '{"gpus": [{"index": 3, "memory_total_mib": 10, "memory_used_mib": 1}]}'
    )
    assert make_backend(f"sim:{path}").poll() == [
        GpuInfo(3, "Simulated GPU", 10, 1, ())
    ]


def test_sim_dead_pid_is_dropped_and_its_memory_freed(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        path = tmp_path / "sim.json"
        procs = [
            {"pid": child.pid, "used_mib": 1000},
            {"pid": dead.pid, "used_mib": 17408},
        ]
        write_sim(path, [sim_gpu(0, used=18920, procs=procs)])
        (gpu0,) = make_backend(f"sim:{path}").poll()
        assert gpu0.processes == (GpuProcess(child.pid, 1000),)
        assert gpu0.memory_used_mib == 18920 - 17408
        # Floored at 0 when the file's own total is smaller than the dead usage.
        write_sim(path, [sim_gpu(0, used=100, procs=procs[1:])])
        (gpu0,) = make_backend(f"sim:{path}").poll()
        assert gpu0.memory_used_mib == 0 and gpu0.processes == ()
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object with key 'gpus'"),
        ('{"gpus": {}}', "gpus: expected a list, got dict"),
        (
            '{"gpu": []}',
            "gpu: unknown key (expected one of gpus, driver) (did you mean 'gpus'?)",
        ),
        (
            '{"gpus": [{"index": 0, "memory_total_mib": 1}]}',
            "gpus[0].memory_used_mib: missing",
        ),
        (
            '{"gpus": [{"index": 0, "memory_total_mib": 1, "memory_used_mib": "x"}]}',
            "gpus[0].memory_used_mib: expected an integer >= 0, got 'x'",
        ),
        (
            '{"gpus": [{"index": true, "memory_total_mib": 1, "memory_used_mib": 1}]}',
            "gpus[0].index: expected an integer >= 0, got True",
        ),
        (
            '{"gpus": [{"index": 0, "memory_total_mib": 1, "memory_used_mib": 1,'
            ' "processes": [{"pid": 1}]}]}',
            "gpus[0].processes[0].used_mib: missing",
        ),
        (
            '{"gpus": [{"index": 0, "memory_total_mib": 1, "memory_used_mib": 1},'
            ' {"index": 0, "memory_total_mib": 1, "memory_used_mib": 1}]}',
            "gpus[1].index: index 0 listed twice",
        ),
    ],
)
def test_sim_malformed_file_names_file_and_key(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "sim.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        make_backend(f"sim:{path}")
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_sim_malformed_at_poll_time_is_a_failed_poll(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    write_sim(path, [sim_gpu(0)])
    backend = make_backend(f"sim:{path}")
    path.write_text('{"gpus": [{"index": 0}]}')
    with pytest.raises(
        GpuPollError, match=r"sim.json: gpus\[0\].memory_total_mib: missing"
    ):
        backend.poll()
    assert backend.driver_version() is None
    path.unlink()
    with pytest.raises(GpuPollError, match="simulated GPU file not found"):
        backend.poll()


def test_sim_missing_file_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="simulated GPU file not found"):
        make_backend(f"sim:{tmp_path / 'nope.json'}")


# -- the pool


def infos(*indices: int) -> list[GpuInfo]:
    return [GpuInfo(i, "g", 100, 0) for i in indices]


def test_pool_without_outer_visible_devices() -> None:
    pool = GpuPool.from_env(exclude=[6, 7], environ={})
    assert pool.visible is None
    assert [g.index for g in pool.members(infos(*range(8)))] == [0, 1, 2, 3, 4, 5]
    assert pool.visible_devices([4, 1]) == "4,1"
    assert pool.env([1]) == {
        "CUDA_VISIBLE_DEVICES": "1",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    with pytest.raises(TuneError, match="GPU 6 is not in the pool"):
        pool.visible_devices([6])


def test_pool_maps_through_an_outer_visible_devices() -> None:
    pool = GpuPool.from_env(environ={"CUDA_VISIBLE_DEVICES": "2,3,5"})
    assert pool.visible == (2, 3, 5)
    assert [g.index for g in pool.members(infos(*range(8)))] == [2, 3, 5]
    # Physical [3, 5] are positions 1 and 2 of the outer list.
    assert pool.visible_devices([3, 5]) == "1,2"
    assert pool.visible_devices([2]) == "0"
    with pytest.raises(TuneError, match="not in the pool CUDA_VISIBLE_DEVICES=2,3,5"):
        pool.visible_devices([4])


def test_pool_outer_order_and_exclude() -> None:
    pool = GpuPool.from_env(exclude=[3], environ={"CUDA_VISIBLE_DEVICES": "5, 2,3"})
    assert [g.index for g in pool.members(infos(*range(8)))] == [5, 2]
    assert pool.visible_devices([2]) == "1"
    assert pool.describe() == "CUDA_VISIBLE_DEVICES=5,2,3 minus gpu_exclude 3"


def test_pool_empty_outer_means_no_gpu() -> None:
    pool = GpuPool.from_env(environ={"CUDA_VISIBLE_DEVICES": ""})
    assert pool.members(infos(0, 1)) == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("GPU-8f2a1c3e-0000", "UUID entries (GPU-8f2a1c3e-0000) are not supported"),
        ("0,MIG-1", "UUID entries (MIG-1) are not supported"),
        ("0,x", "expected comma-separated GPU indices, got 'x'"),
        ("1,1", "GPU 1 listed twice"),
    ],
)
def test_pool_rejects_bad_visible_devices(raw: str, message: str) -> None:
    with pytest.raises(TuneError) as info:
        parse_visible(raw)
    assert message in str(info.value)
    assert str(info.value).startswith(f"CUDA_VISIBLE_DEVICES={raw}: ")


# -- auto workers


def test_auto_workers_counts_free_gpu_groups(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    gpus = [sim_gpu(i) for i in range(8)]
    gpus[0]["memory_used_mib"] = 30000  # busy
    write_sim(path, gpus)
    backend = make_backend(f"sim:{path}")
    pool = GpuPool.from_env(exclude=[7], environ={})
    assert auto_workers(backend, pool, 2, 2048) == 3  # 6 free // 2
    assert auto_workers(backend, pool, 1, 2048) == 6
    assert auto_workers(backend, pool, 8, 2048) == 1  # at least one
    assert auto_workers(backend, pool, 1, 40000) == 7


def test_auto_workers_gate_off_leaves_it_to_xdist() -> None:
    assert auto_workers(make_backend("none"), GpuPool(), 2, 2048) is None


def test_auto_workers_failed_poll(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    write_sim(path, [sim_gpu(0)])
    backend = make_backend(f"sim:{path}")
    path.write_text("{")
    assert auto_workers(backend, GpuPool(), 1, 2048) is None
