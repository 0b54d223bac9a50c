"""`make demo` must keep telling a true story: its recovery is verified."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def test_demo_recovers_both_tenants_from_the_other_region(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check --read-data: passed" in proc.stdout
    assert proc.stdout.count("│ yes") == 2, proc.stdout
    assert "NO" not in proc.stdout
