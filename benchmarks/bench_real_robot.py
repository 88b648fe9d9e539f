"""The 'mpc' graph in real time, from zero data, over several seeds: on the hardware-like fixture
(``sim:=hardware``: wall-clock stamps, 500 Hz with jitter, zero-order hold, stale commands → zero
torque, no reset service, no gravity compensation; arm6, a robot nothing was tuned for, with the
robot configuration ``mbrl-ros robot-config`` derived for a home pose in front of the base) and on
the package's simulator in ``mode:=realtime`` (arm7). Each run is ``mbrl-ros launch mpc …``, the
user's command; the figures come from its ``results.json``.

Prints, per setting: held-out success within 2 cm and 5 cm, mean final distance (and that of the
π0 episodes before the first model, for comparison), the planner's rate (median over the
held-out episodes of the rate the episode manager logs: 1 / mean time per plan), seconds of robot
data (training episodes), wall time, as mean and spread over the seeds; ``--json FILE`` writes
them.

    python benchmarks/bench_real_robot.py [--seeds 0,1,2] [--train 40] [--eval 8]
                                          [--settings fixture,arm7] [--json FILE]
                                          [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "fixture": ["sim:=hardware", "robot:=arm6", "robot_config:=config/robots/arm6.yaml"],
    "arm7": ["sim:=true", "mode:=realtime", "robot:=arm7"],
}


def run(setting: str, seed: int, train: int, n_eval: int, length: float, out: Path) -> dict:
    """One launch; its held-out figures."""
    cmd = [
        sys.executable,
        "-m",
        "mbrl_ros.cli",
        "launch",
        "mpc",
        *SETTINGS[setting],
        f"seed:={seed}",
        f"train_episodes:={train}",
        f"final_eval_episodes:={n_eval}",
        f"episode_length:={length}",
        f"output_dir:={out}",
    ]
    print("$ " + " ".join(cmd[2:]), flush=True)
    tic = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - tic
    out.mkdir(parents=True, exist_ok=True)
    (out / "launch.log").write_text(proc.stdout + proc.stderr)  # every node's log, for --keep
    results = out / "results.json"
    if proc.returncode != 0 or not results.exists():
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{setting} seed {seed}: the graph failed (status {proc.returncode})")
    records = json.loads(results.read_text())
    held = [r for r in records if r["held_out"]]
    final = np.array([r["final_distance"] for r in held])
    pi0 = [r["final_distance"] for r in records if r["model_version"] < 0]
    return {
        "within_2cm": float(np.mean(final <= 0.02)),
        "within_5cm": float(np.mean(final <= 0.05)),
        "mean_final_cm": float(100 * final.mean()),
        "pi0_final_cm": float(100 * np.mean(pi0)) if pi0 else float("nan"),
        "plan_hz": float(np.nanmedian([r["plan_rate_hz"] for r in held])),
        "robot_data_s": train * length,
        "wall_s": wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument(
        "--train", type=int, default=40, help="training episodes (40 × 3 s: the goal's 120 s)"
    )
    ap.add_argument("--eval", type=int, default=8, help="held-out episodes")
    ap.add_argument("--episode-length", type=float, default=3.0, help="s")
    ap.add_argument("--settings", default="fixture,arm7")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--keep",
        type=Path,
        help="keep each run's output_dir (results, summary, plot, launch.log) under this folder",
    )
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    table = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        for setting in args.settings.split(","):
            runs = [
                run(
                    setting,
                    s,
                    args.train,
                    args.eval,
                    args.episode_length,
                    Path(tmp) / f"{setting}_{s}",
                )
                for s in seeds
            ]
            table[setting] = {"seeds": seeds, "runs": runs}
            for r, s in zip(runs, seeds):
                print(f"{setting} seed {s}: {r}", flush=True)
    print(
        "\n| setting | within 2 cm (%) | within 5 cm (%) | mean final (cm) | π0 episodes' final "
        "(cm) | plans (Hz) | robot data (s) | wall (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for setting, t in table.items():
        cols = []
        for key, scale in (
            ("within_2cm", 100),
            ("within_5cm", 100),
            ("mean_final_cm", 1),
            ("pi0_final_cm", 1),
            ("plan_hz", 1),
            ("robot_data_s", 1),
            ("wall_s", 1),
        ):
            v = np.array([r[key] for r in t["runs"]]) * scale
            cols.append(f"{v.mean():.1f} ± {v.std():.1f}")
        print(f"| {setting} | " + " | ".join(cols) + " |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
