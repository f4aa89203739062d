"""mypy over the whole service, as part of the tests: a type error fails the suite.

What it catches here: an event attribute no event class declares, a handler
keyed by something that is not an event class, a wrong return type, a
``type: ignore`` that no longer ignores anything. The configuration is
``[tool.mypy]`` in pyproject.toml (pydantic plugin included).

mypy cannot follow the editable install's mapping of the checkout's folders to
``chainloom.*``, so it is pointed at a directory holding one symlink,
``chainloom`` → the checkout, and checks the six layers as ``chainloom.*``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("domain", "commands", "projections", "queries", "web", "infra")
# Warm runs take about a second: the cache survives between runs (.cache/ is not checked in).
CACHE_DIR = ROOT / ".cache" / "mypy"


def test_mypy_reports_nothing(tmp_path: Path):
    (tmp_path / "chainloom").symlink_to(ROOT, target_is_directory=True)
    packages = [argument for layer in LAYERS for argument in ("-p", f"chainloom.{layer}")]
    env = {**os.environ, "MYPYPATH": str(tmp_path)}
    env.pop("MYPY_CACHE_DIR", None)
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(CACHE_DIR),
            "--no-error-summary",
            "--no-color-output",
            *packages,
        ],
        cwd=tmp_path,  # not the checkout: its folders must not be found as top-level modules
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if checked.returncode != 0:
        pytest.fail(f"mypy reports:\n{checked.stdout}{checked.stderr}", pytrace=False)
