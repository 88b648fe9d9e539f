"""The 'gps' graph on the hardware-like fixture, with homing instead of resets (issue 13): arm6
at 500 Hz with jitter, wall-clock stamps, zero-order hold, stale commands → zero torque, no reset
service, no gravity compensation (the executor adds g(q), the trainer takes it off its samples).
Before every sample the trainer homes the arm to the condition's pose (the home of
config/robots/arm6.yaml) and starts the sample once the arm has settled there; joint states and
the executor's send-time-tagged commands are resampled onto the controller's 10 ms grid. The run
is the user's command, ``mbrl-ros launch gps sim:=hardware robot:=arm6 robot_config:=…``.

Prints, per iteration: samples used so far, the mean cost and the mean final end-effector
distance of the iteration's samples (from the trainer's summary.txt; one condition), and for the
run: the target, its distance from the start pose, samples dropped (holes in the stream), wall
time; ``--json FILE`` writes them.

    python benchmarks/bench_gps_fixture.py [--iterations 5] [--samples 5] [--seed 0]
                                           [--target x,y,z] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mbrl_ros.robot.config import load_robot_config
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics

CONFIG = Path(__file__).parents[1] / "config" / "robots" / "arm6.yaml"
OFFSET = np.array([0.3, -0.2, 0.25, 0.0, 0.0, 0.0])  # rad from home: the default target's pose


def default_target() -> tuple[np.ndarray, float]:
    """The end effector at home + OFFSET (reachable by construction) and its distance (m) from
    the end effector at home."""
    settings, _ = load_robot_config(CONFIG)
    fk = ForwardKinematics(load_robot(settings.robot))
    home = np.array(settings.home)
    at = lambda q: fk.ee_position(torch.as_tensor(q)).numpy()  # noqa: E731
    target = at(home + OFFSET)
    return target, float(np.linalg.norm(target - at(home)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--target",
        default="",
        help=f"x,y,z (m); '' = the end effector at home + {OFFSET.tolist()} rad",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.target:
        target, start_cm = np.array([float(v) for v in args.target.split(",")]), float("nan")
    else:
        target, start_cm = default_target()
        start_cm *= 100
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [
            sys.executable,
            "-m",
            "mbrl_ros.cli",
            "launch",
            "gps",
            "sim:=hardware",
            "robot:=arm6",
            f"robot_config:={CONFIG}",
            f"iterations:={args.iterations}",
            f"samples:={args.samples}",
            f"seed:={args.seed}",
            "status_period:=0",
            "target:=" + ",".join(f"{v:.4f}" for v in target),
            f"output_dir:={out}",
        ]
        print("$ " + " ".join(cmd[2:]), flush=True)
        tic = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - tic
        log = proc.stdout + proc.stderr
        summary = out / "summary.txt"
        if proc.returncode != 0 or not summary.exists():
            print(log[-4000:], file=sys.stderr)
            raise SystemExit(f"the gps graph failed (status {proc.returncode})")
        rows = [r.split() for r in summary.read_text().splitlines()[1:]]
    dropped = max(
        [int(m) for m in re.findall(r"dropped_samples x(\d+)", log)]
        + [1 if "sample dropped" in log else 0]
    )
    iterations = [
        {
            "iteration": int(r[0]),
            "samples_used": int(r[1]),
            "mean_cost": float(r[2]),
            "mean_final_cm": float(r[3]),
        }
        for r in rows
    ]
    print(
        f"target {np.round(target, 4).tolist()} m, {start_cm:.1f} cm from the end effector at "
        f"the start pose; {dropped} sample(s) dropped; wall {wall:.0f} s"
    )
    print("iter  samples  mean cost  mean final cm")
    for it in iterations:
        print(
            f"{it['iteration']:4d}  {it['samples_used']:7d}  {it['mean_cost']:9.1f}  "
            f"{it['mean_final_cm']:13.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "target": target.tolist(),
                    "start_cm": start_cm,
                    "dropped_samples": dropped,
                    "wall_s": wall,
                    "iterations": iterations,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
