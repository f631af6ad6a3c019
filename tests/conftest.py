"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable

import pytest

import embq


@pytest.fixture
def run_python(tmp_path_factory) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python ARGS...`` in a fresh interpreter that imports this process's embq.

    The child starts in an empty directory and gets the parent folder of the embq this
    test process imported put first on ``PYTHONPATH``: run from a checkout, a bare
    ``python -c`` or ``python -m`` would otherwise import the uncompiled source tree in
    the working directory instead of the installed, built package under test.
    """
    cwd = tmp_path_factory.mktemp("subprocess-cwd")
    root = os.path.dirname(os.path.dirname(os.path.abspath(embq.__file__)))

    def run(*args: str, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = root + os.pathsep + full_env.get("PYTHONPATH", "")
        return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    return run
