"""``benchmarks/bench_planners.py`` runs end to end on a tiny budget (the wiring, not the
figures: its replanning section once indexed ``PlannerSettings`` like a dict and crashed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_planner_benchmark_runs_and_prints_the_replanning_rates():
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_planners.py"
    args = ["--fit-seconds", "0", "--rounds", "1", "--starts", "0"]
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replanning at the mpc graph's arm7 settings (horizon 15" in result.stdout
    assert "× floor" in result.stdout, result.stdout[-2000:]
