"""Who owns pytest's run loop during a calibration.

Serial: the calibration replaces the loop. Under pytest-xdist each worker runs
the calibration first (claiming stage-runs itself, xdist was handed no items)
and then lets xdist's own loop receive the controller's shutdown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import pytest

from .session import CalibrationPlugin


class SerialLoop:
    """Owns pytest's run loop in a calibration without xdist."""

    def __init__(self, calibration: CalibrationPlugin) -> None:
        self.calibration = calibration

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if session.config.option.collectonly:
            return True
        self.calibration.calibrate(session)
        return True


class WorkerLoop:
    """Runs the calibration on an xdist worker before xdist's own (empty) loop."""

    def __init__(self, calibration: CalibrationPlugin) -> None:
        self.calibration = calibration

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(
        self, session: pytest.Session
    ) -> Generator[None, object, object]:
        cal = self.calibration
        items = getattr(cal, "_worker_items", [])
        interactor = _worker_interactor(session.config)
        saved = session.items
        session.items = items
        try:
            with _xdist_reporting(cal, interactor, items):
                cal.calibrate(session)
        finally:
            session.items = saved
        return (yield)


@contextlib.contextmanager
def _xdist_reporting(
    cal: CalibrationPlugin, interactor: Any, items: list[pytest.Item]
) -> Generator[None]:
    """Let xdist forward our reports: it looks each one up by item index."""
    if interactor is None:
        yield
        return
    index = {item.nodeid: i for i, item in enumerate(items)}

    def before(item: pytest.Item) -> None:
        interactor.item_index = index[item.nodeid]

    cal.before_item = before
    try:
        yield
    finally:
        cal.before_item = None


def _worker_interactor(config: pytest.Config) -> Any:
    """xdist's worker-side plugin (registered without a name)."""
    for plugin in config.pluginmanager.get_plugins():
        if type(plugin).__name__ == "WorkerInteractor":
            return plugin
    return None
