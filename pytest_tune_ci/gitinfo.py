"""Git state of the tree under test, for provenance and resume checks."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitState:
    sha: str | None
    branch: str | None
    dirty: bool


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def head(root: Path) -> str | None:
    return _git(root, "rev-parse", "HEAD")


def state(root: Path) -> GitState:
    sha = head(root)
    if sha is None:
        return GitState(None, None, False)
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return GitState(sha, branch, bool(status))


def diff(root: Path) -> str:
    return _git(root, "diff", "HEAD") or ""
