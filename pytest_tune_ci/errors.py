"""Error and warning classes shared by every module.

The ground-floor modules raise these; the pytest entry module turns
:class:`TuneError` into a ``pytest.UsageError`` so that users see one clear line
instead of a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TuneError(Exception):
    """A problem with user input: options, config files, run directories."""


class ConfigError(TuneError):
    """A config or stages file is malformed.

    The message always starts with the file, then the key path, then what was
    expected, e.g. ``models/x/config.yaml: metric_sources.a.paths: expected a
    mapping, got list``.
    """

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.detail = message
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {message}")


class RunError(TuneError):
    """A calibration cannot go on (exit code 1, not a usage error)."""


class TuneWarning(UserWarning):
    """Base class of the warnings this plugin issues."""


class StaleStagesWarning(TuneWarning):
    """stages.yaml no longer matches the test files it describes."""


def closest(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` when a choice is close to ``word``."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {match[0]!r}?)" if match else ""
