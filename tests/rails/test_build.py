"""The committed artifacts are what the sources compile to, byte for byte."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "contracts" / "build.py"


@pytest.mark.slow
def test_artifacts_rebuild_byte_for_byte() -> None:
    # One compile of all sources (solc-js, a few seconds), compared with contracts/artifacts.
    completed = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--check"], capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "matches the sources" in completed.stdout


def test_check_reports_a_stale_artifact(tmp_path: Path) -> None:
    artifacts = BUILD_SCRIPT.parent / "artifacts"
    for path in artifacts.glob("*.json"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "Disperse.json").write_text("{}\n")
    (tmp_path / "Gone.json").write_text("{}\n")
    spec = importlib.util.spec_from_file_location("stablegate_contracts_build", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    problems = build.differences(tmp_path, artifacts)
    assert problems == ["not produced by the sources: Gone.json", "differs: Disperse.json"]
