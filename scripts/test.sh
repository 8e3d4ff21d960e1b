#!/usr/bin/env bash
# Install the plugin with its development extras and run its test suite.
# The README's quick start and CI (.ci/run) both call this script.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[dev]'
python -m pytest "$@"
