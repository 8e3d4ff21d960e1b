"""Configs and stages files written for the legacy tune.py keep working."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_tune_ci.config import load_config_file
from pytest_tune_ci.stages import load_stages


REPO = Path(__file__).resolve().parent.parent
LEGACY = REPO.parent / "shared" / "reference" / "sglang-omni"

pytestmark = pytest.mark.skipif(
    not LEGACY.is_dir(), reason="the legacy reference files are not beside the checkout"
)


@pytest.mark.parametrize(
    ("name", "count"), [("qwen3-omni-v1", 25), ("s2-pro-v1", 4), ("tts", 7)]
)
def test_legacy_files_load(name: str, count: int, tmp_path: Path) -> None:
    config = load_config_file(LEGACY / name / "config.yaml", tmp_path)
    assert config.name in (name, "tts")
    stages = load_stages(LEGACY / name / "stages.yaml")
    assert len(stages) == count
    for stage in stages.values():
        for metric in stage.metrics.values():
            assert metric.location.symbol.lstrip("_")[0].isupper()


@pytest.mark.parametrize("name", ["qwen3-omni-v1", "s2-pro-v1"])
def test_bundled_stages_keep_the_legacy_keys_and_sources(name: str) -> None:
    legacy = load_stages(LEGACY / name / "stages.yaml")
    ours = load_stages(REPO / "models" / name / "stages.yaml")
    assert list(ours) == list(legacy)
    for key, stage in ours.items():
        theirs = {m: s.source for m, s in legacy[key].metrics.items()}
        mine = {m: s.source for m, s in stage.metrics.items()}
        # Our sources name the concurrency level too; the rest is the same.
        refs = {m: s.location.ref for m, s in stage.metrics.items()}
        assert {m: re.sub(r"\[\d+\]", "", r, count=1) for m, r in refs.items()} == (
            {m: theirs[m] for m in refs}
        )
        # Talker WER metrics wait for tests that persist WER (see config).
        assert set(theirs) >= set(mine)
