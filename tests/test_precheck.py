from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from importlib import metadata
from pathlib import Path

import pytest

from pytest_tune_ci import atomic
from pytest_tune_ci.errors import ConfigError
from pytest_tune_ci.gpu import make_backend
from pytest_tune_ci.precheck import PrecheckResult
from pytest_tune_ci.precheck import hub_cache
from pytest_tune_ci.precheck import read_pins
from pytest_tune_ci.precheck import run_precheck
from pytest_tune_ci.stages import Stage


PYTEST = metadata.version("pytest")
PACKAGING = metadata.version("packaging")


@dataclass
class Model:
    """Stand-in for config.ModelConfig with the attributes precheck reads."""

    name: str = "demo"
    hf_model_id: str | None = "org/base-model"
    hf_model_ids_by_test: Mapping[str, Sequence[str]] = field(default_factory=dict)
    hf_datasets: Sequence[str] = ("org/ds-a",)
    hf_datasets_by_test: Mapping[str, Sequence[str]] = field(default_factory=dict)
    pins_file: str = "pyproject.toml"
    gpu_free_mib: int = 2048
    gpu_exclude: Sequence[int] = ()
    gpus_per_test: Mapping[str, int] = field(default_factory=dict)

    def gpus_for(self, basename: str) -> int:
        return self.gpus_per_test.get(basename, 1)


def stage(test: str) -> Stage:
    return Stage(key=Path(test).stem, test=test, title="t", group="g", base="b")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return cache


def cache_repo(
    cache: Path, kind: str, repo_id: str, files: Sequence[str], dangling: bool = False
) -> None:
    """Lay out a repo the way huggingface_hub does: snapshot symlinks into blobs."""
    root = cache / f"{kind}s--{repo_id.replace('/', '--')}"
    blobs = root / "blobs"
    snap = root / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0123abcd")
    for i, name in enumerate(files):
        blob = blobs / f"blob{i}"
        if not dangling:
            blob.write_text("x")
        target = snap / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(blob, target.parent))


def write_pins(rootdir: Path, *deps: str) -> None:
    body = ", ".join(json.dumps(d) for d in deps)
    (rootdir / "pyproject.toml").write_text(
        f'[project]\nname = "demo"\nversion = "1"\ndependencies = [{body}]\n'
    )


def lines_by_name(result: PrecheckResult) -> dict[str, str]:
    return {c.name: line for c, line in zip(result.checks, result.lines, strict=False)}


def test_pins_against_installed_versions(tmp_path: Path, hub: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    write_pins(
        root,
        "pytest==0.0.1",
        f"packaging=={PACKAGING}",
        "colorama==0.1; sys_platform == 'nonexistent-os'",
        "surely-not-installed-pkg==1.2.3",
        "psutil>=5",  # a range, not a pin
        "PyYAML[extra]==0.0.2; python_version >= '3'",
    )
    model = Model(hf_model_id=None, hf_datasets=())
    result = run_precheck(model, [], root, make_backend("none"), None)
    lines = lines_by_name(result)
    assert list(lines) == [
        "pin pytest==0.0.1",
        f"pin packaging=={PACKAGING}",
        "pin surely-not-installed-pkg==1.2.3",
        "pin PyYAML==0.0.2",
        "gpus",
    ]
    assert lines["pin pytest==0.0.1"] == (
        f"missing  pin pytest==0.0.1: installed {PYTEST}; "
        "fix: pip install pytest==0.0.1"
    )
    assert lines[f"pin packaging=={PACKAGING}"] == (
        f"ok       pin packaging=={PACKAGING}: installed {PACKAGING}"
    )
    assert lines["pin surely-not-installed-pkg==1.2.3"] == (
        "missing  pin surely-not-installed-pkg==1.2.3: not installed; "
        "fix: pip install surely-not-installed-pkg==1.2.3"
    )
    assert lines["pin PyYAML==0.0.2"].endswith(
        "fix: pip install 'PyYAML[extra]==0.0.2'"
    )
    assert not result.ok
    assert result.lines[-1] == "precheck FAILED (3 problem(s))"
    assert result.data["pins"] == {
        "pytest": "0.0.1",
        "packaging": PACKAGING,
        "surely-not-installed-pkg": "1.2.3",
        "PyYAML": "0.0.2",
    }
    assert result.data["versions"]["packaging"] == PACKAGING
    assert result.data["versions"]["surely-not-installed-pkg"] is None
    assert "colorama" not in result.data["versions"]


def test_pins_file_missing_or_malformed(tmp_path: Path, hub: Path) -> None:
    model = Model(hf_model_id=None, hf_datasets=())
    result = run_precheck(model, [], tmp_path, make_backend("none"), None)
    assert result.ok
    assert result.lines[0].startswith("ok       pins: no pyproject.toml at ")
    (tmp_path / "pyproject.toml").write_text("[project\n")
    result = run_precheck(model, [], tmp_path, make_backend("none"), None)
    assert not result.ok
    assert result.lines[0].startswith(
        f"missing  pins: {tmp_path / 'pyproject.toml'}: not valid TOML"
    )
    write_pins(tmp_path, "not a requirement ==")
    with pytest.raises(
        ConfigError, match=r"project.dependencies\[0\]: 'not a requirement =='"
    ):
        read_pins(tmp_path / "pyproject.toml")


def test_models_and_datasets_in_the_hf_cache(tmp_path: Path, hub: Path) -> None:
    cache_repo(hub, "model", "org/base-model", ["config.json", "model.safetensors"])
    cache_repo(hub, "model", "org/no-weights", ["config.json"])
    cache_repo(hub, "model", "org/dangling", ["pytorch_model.bin"], dangling=True)
    cache_repo(hub, "model", "org/sub-weights", ["sub/pytorch_model.bin"])
    cache_repo(hub, "dataset", "org/ds-a", ["data/train.arrow"])
    model = Model(
        hf_model_ids_by_test={
            "test_b.py": ["org/no-weights", "org/dangling", "org/missing"],
            "test_c.py": ["org/sub-weights"],
        },
        hf_datasets=("org/ds-a", "org/ds-b"),
        hf_datasets_by_test={"test_a.py": ["org/ds-a"], "test_c.py": []},
    )
    stages = [
        stage("tests/test_a.py"),
        stage("tests/test_b.py"),
        stage("tests/test_c.py"),
    ]
    result = run_precheck(model, stages, tmp_path, make_backend("none"), None)
    lines = lines_by_name(result)
    assert [n for n in lines if n.startswith(("model", "dataset"))] == [
        "model org/base-model",
        "model org/no-weights",
        "model org/dangling",
        "model org/missing",
        "model org/sub-weights",
        "dataset org/ds-a",
        "dataset org/ds-b",
    ]
    assert lines["model org/base-model"].startswith(
        "ok       model org/base-model: cached"
    )
    assert lines["model org/sub-weights"].startswith("ok ")
    assert lines["dataset org/ds-a"].startswith("ok ")
    no_weights = lines["model org/no-weights"]
    assert no_weights.startswith(
        "missing  model org/no-weights: no *.safetensors or *.bin"
    )
    assert no_weights.endswith("; fix: hf download org/no-weights")
    assert lines["model org/dangling"].startswith(
        "missing  model org/dangling: not in the"
    )
    assert lines["model org/missing"] == (
        f"missing  model org/missing: not in the Hugging Face cache "
        f"({hub / 'models--org--missing'}); fix: hf download org/missing"
    )
    assert lines["dataset org/ds-b"].endswith(
        "; fix: hf download org/ds-b --repo-type dataset"
    )
    assert result.lines[-1] == "precheck FAILED (4 problem(s))"


def test_hub_cache_resolution(tmp_path: Path) -> None:
    assert hub_cache({"HF_HUB_CACHE": "/a", "HF_HOME": "/b"}) == Path("/a")
    assert hub_cache({"HF_HOME": "/b"}) == Path("/b/hub")
    assert hub_cache({"XDG_CACHE_HOME": "/c"}) == Path("/c/huggingface/hub")
    assert hub_cache({}) == Path.home() / ".cache" / "huggingface" / "hub"


def sim_host(path: Path, used: Sequence[int]) -> None:
    gpus = [
        {
            "index": i,
            "name": "NVIDIA H20",
            "memory_total_mib": 97871,
            "memory_used_mib": mib,
        }
        for i, mib in enumerate(used)
    ]
    atomic.write_json(path, {"gpus": gpus, "driver": "550.54.15"})


def test_gpus_checked_with_the_gate_rule(tmp_path: Path, hub: Path) -> None:
    sim = tmp_path / "sim.json"
    sim_host(sim, [512, 30000, 100, 100])
    backend = make_backend(f"sim:{sim}")
    model = Model(
        hf_model_id=None,
        hf_datasets=(),
        gpus_per_test={"test_big.py": 3},
        gpu_exclude=(3,),
    )
    ok = run_precheck(model, [stage("tests/test_small.py")], tmp_path, backend, None)
    assert ok.ok
    assert ok.lines[-2] == (
        "ok       gpus: 2 of 3 GPU(s) free in the pool "
        "(all GPUs minus gpu_exclude 3), need 1"
    )
    stages = [stage("tests/test_small.py"), stage("tests/test_big.py")]
    bad = run_precheck(model, stages, tmp_path, backend, tmp_path / "out")
    assert not bad.ok
    line = bad.lines[-2]
    assert line.startswith("missing  gpus: 2 of 3 GPU(s) free in the pool")
    assert "need 3; GPU 1: 30000 of 97871 MiB used (limit 2048 MiB)" in line
    assert line.endswith("(pytest-tune-ci never signals other users' processes)")
    data = json.loads((tmp_path / "out" / "precheck.json").read_text())
    assert data["gpu"] == {"model": "NVIDIA H20", "count": 4, "driver": "550.54.15"}
    assert data["ok"] is False and data["model"] == "demo"
    assert data["checks"][-1]["name"] == "gpus" and data["checks"][-1]["ok"] is False
    assert data == bad.data


def test_gate_off_gpu_check_and_json(tmp_path: Path, hub: Path) -> None:
    model = Model(hf_model_id=None, hf_datasets=())
    backend = make_backend("none")
    result = run_precheck(
        model, [stage("tests/test_a.py")], tmp_path, backend, tmp_path
    )
    assert result.ok and result.lines[-1] == "precheck OK"
    assert result.lines[-2] == "ok       gpus: ok (gate off: GPU gate off (gpus=none))"
    data = json.loads((tmp_path / "precheck.json").read_text())
    assert set(data) == {
        "model",
        "timestamp",
        "gpu",
        "versions",
        "pins",
        "git",
        "checks",
        "ok",
    }
    assert data["gpu"] is None
    assert data["git"] == {"sha": None, "branch": None, "dirty": None}
    assert data["checks"][-1] == {
        "name": "gpus",
        "ok": True,
        "detail": "ok (gate off: GPU gate off (gpus=none))",
        "fix": None,
    }


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state(tmp_path: Path, hub: Path) -> None:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.email=t@e", "-c", "user.name=t", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    git("init", "-q", "-b", "calib")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("commit", "-q", "-m", "one")
    model = Model(hf_model_id=None, hf_datasets=())
    data = run_precheck(model, [], tmp_path, make_backend("none"), None).data
    assert data["git"] == {
        "sha": git("rev-parse", "HEAD"),
        "branch": "calib",
        "dirty": False,
    }
    (tmp_path / "a.txt").write_text("b")
    data = run_precheck(model, [], tmp_path, make_backend("none"), None).data
    assert data["git"]["dirty"] is True
