"""The four distributions of the repository: each builds to a wheel of its conventional name and installs alone
next to qwenvl; without its framework, its import names the pip command (scripts/check_packages.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.timeout(900)
def test_each_distribution_builds_installs_and_imports_alone(tmp_path: Path) -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_packages.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=880,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for wheel in ("qwenvl-0", "langchain_qwenvl-0", "llama_index_llms_qwenvl-0", "llama_index_readers_qwenvl-0"):
        assert wheel in out.stdout
    assert out.stdout.count("import ") >= 3
    assert "qwenvl wheel: no test code" in out.stdout
    hints = [line for line in out.stdout.splitlines() if line.startswith("without its framework")]
    assert len(hints) == 3 and all("pip install" in h for h in hints)
