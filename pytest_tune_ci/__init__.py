"""Recalibrate the thresholds of GPU-heavy CI tests from inside pytest."""

from __future__ import annotations


__version__ = "0.1.0"
