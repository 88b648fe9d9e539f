"""Every ``mbrl-ros`` error is one line ``mbrl-ros <command>: error: <what>`` with a non-zero exit
status, no traceback and nothing written (issue 12). Commands that need no ROS graph run
in-process through ``cli.main``; an uncaught exception would fail the test, so one stderr line
and the exit status are what is asserted. Publishing commands run as processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from data_testing import lockstep_messages, write_bag
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import UInt8MultiArray

from mbrl_ros import cli
from mbrl_ros.common.artifacts import read_file
from mbrl_ros.common.settings import ConfigError
from mbrl_ros.data.dataset import Dataset, joint_state_names
from mbrl_ros.dynamics.catalog import load_model
from mbrl_ros.dynamics.evaluation import holdout_split
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.graphs.description import graph
from mbrl_ros.nodes.messages import LATCHED_QOS
from mbrl_ros.planning.mpc import PlannerSettings, build_mpc
from mbrl_ros.robot.description import load_robot

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A dataset (arm2, 4 episodes of 40 steps), a bag, a GMM model and a hold controller."""
    d = tmp_path_factory.mktemp("inputs")
    random_torque_dataset(load_robot("arm2"), 4, 40, seed=2).save(d / "d.safetensors")
    write_bag(d / "bag", lockstep_messages(60, resets=(30,)))
    assert (
        cli.main(
            [
                "fit",
                "--dataset",
                str(d / "d.safetensors"),
                "--model",
                "gmm",
                "-o",
                str(d / "m.safetensors"),
            ]
        )
        == 0
    )
    assert (
        cli.main(
            ["send-controller", "--make", "hold", "--robot", "arm2", "-o", str(d / "c.safetensors")]
        )
        == 0
    )
    return {
        "d": str(d / "d.safetensors"),
        "bag": str(d / "bag"),
        "model": str(d / "m.safetensors"),
        "ctrl": str(d / "c.safetensors"),
    }


def run_main(*argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``mbrl-ros argv`` in this process."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, stderr: str, prog: str, *fragments: str) -> None:
    """One stderr line ``<prog>...: error: ...`` containing ``fragments``; a failing status."""
    lines = stderr.splitlines()
    assert code not in (0, None) and len(lines) == 1, (code, stderr)
    assert re.match(rf"{re.escape(prog)}( [a-z]+)?: error: ", lines[0]), lines[0]
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def listing(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def expand(args: list[str], files: dict[str, str], out: Path) -> list[str]:
    """{d}, {bag}, {model}, {ctrl} → the input files; {out} → the (empty) output folder."""
    return [a.format(**files, out=out) for a in args]


NO_CUDA = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"

CASES = {
    # dataset
    "dataset -o existing folder --force": ("dataset {bag} -o {out} --force", ["-o", "is a folder"]),
    "dataset -o in a missing folder": (
        "dataset {bag} -o {out}/no/d.safetensors",
        ["folder", "does not exist"],
    ),
    "dataset -o existing file": ("dataset {bag} -o {d}", ["exists; use --force"]),
    "dataset --dt 0": ("dataset {bag} -o {out}/d.safetensors --dt 0", ["--dt", "'0'", "> 0"]),
    "dataset --dt -0.01": ("dataset {bag} -o {out}/d.safetensors --dt -0.01", ["--dt", "> 0"]),
    "dataset --dt nan": ("dataset {bag} -o {out}/d.safetensors --dt nan", ["--dt", "finite"]),
    "dataset --dt inf": ("dataset {bag} -o {out}/d.safetensors --dt inf", ["--dt", "finite"]),
    "dataset --gap-tolerance 0": (
        "dataset {bag} -o {out}/d.safetensors --gap-tolerance 0",
        ["--gap-tolerance", "> 0 and < 1"],
    ),
    "dataset --gap-tolerance 1": (
        "dataset {bag} -o {out}/d.safetensors --gap-tolerance 1",
        ["--gap-tolerance", "> 0 and < 1"],
    ),
    "dataset missing bag": (
        "dataset {bag} {out}/nobag -o {out}/d.safetensors",
        ["nobag", "does not exist"],
    ),
    "dataset file as bag": ("dataset {d} -o {out}/d.safetensors", ["not a rosbag2 bag"]),
    "dataset --ee-features unknown robot": (
        "dataset {bag} -o {out}/d.safetensors --ee-features arm9",
        ["--ee-features 'arm9'"],
    ),
    "bag info --dt 0": ("bag info {bag} --dt 0", ["--dt"]),
    # fit
    "fit --dataset folder": (
        "fit --dataset {out} --model gmm -o {out}/m.safetensors",
        ["--dataset", "is a folder"],
    ),
    "fit --dataset missing": (
        "fit --dataset {out}/x.safetensors --model gmm -o {out}/m.safetensors",
        ["--dataset", "no file"],
    ),
    "fit --dataset controller": (
        "fit --dataset {ctrl} --model gmm -o {out}/m.safetensors",
        ["c.safetensors", "mbrl_ros/lg_controller"],
    ),
    "fit --bag missing": (
        "fit --bag {out}/nobag --model gmm -o {out}/m.safetensors",
        ["does not exist"],
    ),
    "fit -o folder": ("fit --dataset {d} --model gmm -o {out}", ["-o", "is a folder"]),
    "fit -o existing": ("fit --dataset {d} --model gmm -o {model}", ["exists; use --force"]),
    "fit --device without CUDA": (
        f"fit --dataset {{d}} --model mlp -o {{out}}/m.safetensors --device {NO_CUDA}",
        ["--device", "CUDA device"],
    ),
    "fit --device unknown": (
        "fit --dataset {d} --model mlp -o {out}/m.safetensors --device tpu",
        ["--device", "cpu, cuda or cuda:N"],
    ),
    "fit --horizons 0": (
        "fit --dataset {d} --model gmm -o {out}/m.safetensors --horizons 1 0",
        ["--horizons", "'0'", "≥ 1"],
    ),
    "fit --horizons longer than the data": (
        "fit --dataset {d} --model gmm -o {out}/m.safetensors --horizons 1 500",
        ["--horizons 500", "no 500 consecutive transitions"],
    ),
    "fit --val-fraction 1": (
        "fit --dataset {d} --model gmm -o {out}/m.safetensors --val-fraction 1",
        ["--val-fraction", "< 1"],
    ),
    "fit --seed -1": ("fit --dataset {d} --model gmm -o {out}/m.safetensors --seed -1", ["--seed"]),
    "fit --epochs 0": (
        "fit --dataset {d} --model mlp -o {out}/m.safetensors --epochs 0",
        ["--epochs", "≥ 1"],
    ),
    "fit --max-seconds nan": (
        "fit --dataset {d} --model mlp -o {out}/m.safetensors --max-seconds nan",
        ["--max-seconds", "finite"],
    ),
    "fit network option for gmm": (
        "fit --dataset {d} --model gmm -o {out}/m.safetensors --hidden 8",
        ["--hidden", "not used by a gmm model"],
    ),
    "fit --robot for gmm": (
        "fit --dataset {d} --model gmm -o {out}/m.safetensors --robot arm2",
        ["--robot", "not used"],
    ),
    "fit --robot unknown": (
        "fit --dataset {d} --model physics -o {out}/m.safetensors --robot arm9",
        ["--robot 'arm9'"],
    ),
    # eval-model
    "eval-model MODEL folder": ("eval-model {out} --dataset {d}", ["MODEL", "is a folder"]),
    "eval-model MODEL is a controller": (
        "eval-model {ctrl} --dataset {d}",
        ["c.safetensors", "not a dynamics model"],
    ),
    "eval-model MODEL is a dataset": (
        "eval-model {d} --dataset {d}",
        ["d.safetensors", "not a dynamics model"],
    ),
    "eval-model --dataset folder": (
        "eval-model {model} --dataset {out}",
        ["--dataset", "is a folder"],
    ),
    "eval-model --png folder": (
        "eval-model {model} --dataset {d} --png {out}",
        ["--png", "is a folder"],
    ),
    "eval-model --png in a missing folder": (
        "eval-model {model} --dataset {d} --png {out}/no/r.png",
        ["--png", "does not exist"],
    ),
    "eval-model --png not .png": (
        "eval-model {model} --dataset {d} --png {out}/r",
        ["--png", "must end in .png"],
    ),
    "eval-model --plot-horizon 0": (
        "eval-model {model} --dataset {d} --png {out}/r.png --plot-horizon 0",
        ["--plot-horizon"],
    ),
    "eval-model --horizons longer than the data": (
        "eval-model {model} --dataset {d} --horizons 100",
        ["--horizons 100"],
    ),
    # send-controller
    "send-controller FILE folder": ("send-controller {out}", ["FILE", "is a folder"]),
    "send-controller FILE is a dataset": (
        "send-controller {d} -o {out}/c.safetensors",
        ["d.safetensors", "mbrl_ros/lg_controller"],
    ),
    "send-controller nothing to send": ("send-controller", ["FILE or --make"]),
    "send-controller FILE and --make": ("send-controller {ctrl} --make hold", ["not both"]),
    "send-controller --make option with FILE": (
        "send-controller {ctrl} --kp 3",
        ["--kp", "only with --make"],
    ),
    "send-controller --dt 0": ("send-controller --make hold --dt 0", ["--dt", "> 0"]),
    "send-controller --duration 1e9": (
        "send-controller --make hold --robot arm2 --duration 1e9 -o {out}/c.safetensors",
        ["duration", "1e+11 steps", "at most 100000"],
    ),
    "send-controller --duration -1": (
        "send-controller --make hold --duration -1",
        ["--duration", "> 0"],
    ),
    "send-controller --hold-after inf": (
        "send-controller --make pd --goal 0 0 --hold-after inf",
        ["--hold-after", "finite"],
    ),
    "send-controller --kp 1e9": (
        "send-controller --make hold --robot arm2 --kp 1e9 -o {out}/c.safetensors",
        ["kp 1e+09", "stable range at dt 0.01 s", "maxima"],
    ),
    "send-controller --kd 1e9": (
        "send-controller --make hold --robot arm2 --kd 1e9 -o {out}/c.safetensors",
        ["kd 1e+09", "stable range"],
    ),
    "send-controller --kp -1": ("send-controller --make hold --kp -1", ["--kp", "≥ 0"]),
    "send-controller --kp 3 values for 2 joints": (
        "send-controller --make hold --robot arm2 --kp 1 2 3 -o {out}/c.safetensors",
        ["kp needs 1 or 2 values, got 3"],
    ),
    "send-controller --position 1 value for 2 joints": (
        "send-controller --make hold --robot arm2 --position 0 -o {out}/c.safetensors",
        ["position needs 2 values", "got 1"],
    ),
    "send-controller --goal 3 values for 2 joints": (
        "send-controller --make pd --robot arm2 --goal 0 0 0 -o {out}/c.safetensors",
        ["goal needs 2 values", "got 3"],
    ),
    "send-controller --position nan": (
        "send-controller --make hold --position nan",
        ["--position", "finite"],
    ),
    "send-controller pd without --goal": (
        "send-controller --make pd -o {out}/c.safetensors",
        ["--make pd needs --goal"],
    ),
    "send-controller hold with --goal": (
        "send-controller --make hold --goal 0 0",
        ["--goal", "only with --make pd"],
    ),
    "send-controller --restamp with -o": (
        "send-controller --make hold --restamp -o {out}/c.safetensors",
        ["--restamp", "-o"],
    ),
    "send-controller -o folder": ("send-controller --make hold -o {out}", ["-o", "is a folder"]),
    "send-controller -o existing": (
        "send-controller --make hold --robot arm2 -o {ctrl}",
        ["exists; use --force"],
    ),
    "send-controller --robot unknown": (
        "send-controller --make hold --robot arm9 -o {out}/c.safetensors",
        ["--robot 'arm9'"],
    ),
    "send-controller --topic a~b": (
        "send-controller {ctrl} --topic a~b",
        ["--topic", "'a~b' is not a topic name"],
    ),
    "send-controller --wait -1": ("send-controller {ctrl} --wait -1", ["--wait", "≥ 0"]),
    # robot-config
    "robot-config URDF unknown": ("robot-config arm9 -o {out}/r.yaml", ["URDF 'arm9'"]),
    "robot-config URDF not a URDF": (
        "robot-config {d} -o {out}/r.yaml",
        ["URDF", "d.safetensors", "malformed XML"],
    ),
    "robot-config -o folder": ("robot-config arm2 -o {out}", ["-o", "is a folder"]),
    "robot-config -o not .yaml": ("robot-config arm2 -o {out}/r.txt", ["-o", "must end in .yaml"]),
    "robot-config -o in a missing folder": (
        "robot-config arm2 -o {out}/no/r.yaml",
        ["folder", "does not exist"],
    ),
    "robot-config without -o": ("robot-config arm2", ["-o/--output", "required"]),
    "robot-config --home count": (
        "robot-config arm2 -o {out}/r.yaml --home 0",
        ["--home", "needs 2 values", "got 1"],
    ),
    "robot-config --home outside the limits": (
        "robot-config arm2 -o {out}/r.yaml --home 0,2.7",
        ["--home", "joint2: 2.7 not in [-2.6, 2.6]"],
    ),
    "robot-config --home not numbers": (
        "robot-config arm2 -o {out}/r.yaml --home 0,x",
        ["--home", "'x' is not a finite number"],
    ),
    "robot-config --home empty item": (
        "robot-config arm2 -o {out}/r.yaml --home 0,,1",
        ["--home", "comma-separated"],
    ),
    "robot-config --compensates-gravity maybe": (
        "robot-config arm2 -o {out}/r.yaml --compensates-gravity maybe",
        ["--compensates-gravity", "'maybe' is not true or false"],
    ),
    "robot-config --ee-link unknown": (
        "robot-config arm2 -o {out}/r.yaml --ee-link hand",
        ["ee_link 'hand' is not a link"],
    ),
    # versions
    "versions --robot unknown": ("versions --robot arm9", ["--robot", "'arm9'"]),
    "versions --budget 0": ("versions --budget 0", ["--budget", "'0' is not a finite number > 0"]),
    "versions --seeds x": ("versions --seeds 0,x", ["--seeds", "'x' is not an integer"]),
    "versions --versions unknown": (
        "versions --versions v1.5,v3",
        ["--versions", "unknown versions ['v3']"],
    ),
    "versions --set not NAME=VALUE": ("versions --set horizon", ["--set", "NAME=VALUE"]),
    "versions --set unknown setting": (
        "versions --set horizn=5 --budget 1",
        ["unknown PlannerSettings setting(s) 'horizn' (did you mean 'horizon'?)"],
    ),
    "versions --set bad value": ("versions --set horizon=0", ["'horizon' = 0", "out of range"]),
    "versions --executor-rate 3": (
        "versions --executor-rate 3",
        ["executor_rate 3 does not divide the control period", "whole physics steps"],
    ),
    "versions --executor-rate 0": ("versions --executor-rate 0", ["--executor-rate", "≥ 1"]),
    "versions --plan-latency 2": (
        "versions --versions v1.5 --plan-latency 2",
        ["plan_latency 2", "v1.5 replans every 1", "0..1"],
    ),
    "versions --feedback-every 0": ("versions --feedback-every 0", ["--feedback-every"]),
    # replay (the checks come before any ROS)
    "replay missing bag": ("replay {out}/nobag", ["nobag", "does not exist"]),
    "replay --rate 0": ("replay {bag} --rate 0", ["--rate", "≥ 0.01"]),
    # launch: graph arguments are checked when the graph is built, before any node starts
    "launch planner:=random": (
        "launch mpc planner:=random",
        ["planner = 'random'", "cem, icem, ilqr, mppi, random_shooting"],
    ),
    "launch model:=nope": ("launch mpc model:=nope", ["model = 'nope'", "ensemble"]),
    "launch sim mode:=fast": ("launch sim mode:=fast", ["mode = 'fast'", "lockstep, realtime"]),
    "launch record mode:=fast": ("launch record mode:=fast", ["mode = 'fast'"]),
    "launch gps prior:=x": ("launch gps prior:=x", ["prior = 'x'", "gmm, none"]),
    "launch robot:=arm9": ("launch sim robot:=arm9", ["robot = 'arm9'", "arm2, arm6, arm7"]),
    "launch policy robot:=arm9": ("launch policy robot:=arm9", ["robot = 'arm9'"]),
    "launch episode_length:=inf": ("launch mpc episode_length:=inf", ["graph 'mpc'", "infinity"]),
    # the top level
    "no command": ("", ["required"]),
    "unknown command": ("nope", ["invalid choice"]),
}


@pytest.mark.parametrize("case", CASES)
def test_error_is_one_line_and_nothing_is_written(case, files, tmp_path):
    args, fragments = CASES[case]
    argv = expand(args.split(), files, tmp_path)
    inputs = sorted(Path(files["d"]).parent.rglob("*"))
    code, _, err = run_main(*argv)
    prog = "mbrl-ros" + (f" {argv[0]}" if argv and argv[0] in cli.COMMANDS else "")
    assert_one_line_error(code, err, prog, *fragments)
    assert listing(tmp_path) == [], "an output was written"
    assert sorted(Path(files["d"]).parent.rglob("*")) == inputs


# -- fit: a model worse than predicting no motion --------------------------------------------------
def drift_dataset(
    held_out_drift: float, drift: float = 1.0, episodes: int = 4, steps: int = 30
) -> Dataset:
    """One joint whose state moves by ``drift`` per step in the training episodes and by
    ``held_out_drift`` in those ``fit`` holds out (seed 0, fraction 0.2), whatever the action:
    a model of the training episodes mispredicts the held-out ones."""
    episode = np.repeat(np.arange(episodes), steps)
    n = len(episode)
    rng = np.random.default_rng(0)
    velocity, actions = rng.normal(size=n), rng.uniform(-1, 1, (n, 1))

    def build(step):
        position = np.cumsum(step) - step
        s = np.stack([position, velocity], axis=1)
        return Dataset(
            s,
            actions,
            s + np.stack([step, np.zeros(n)], axis=1),
            episode,
            np.arange(n) * 50_000_000,
            ("j",),
            0.05,
            joint_state_names(("j",)),
        )

    _, val = holdout_split(build(np.full(n, drift)), 0.2, 0)
    return build(np.where(np.isin(episode, val.episode_ids), held_out_drift, drift))


@pytest.mark.parametrize("reject", [False, True])
def test_fit_warns_or_refuses_a_model_worse_than_no_motion(tmp_path, reject):
    """Held-out episodes move 0.2 per step, training ones 1.0: the GMM predicts 1.0, so its
    1-step RMSE is 0.8 against no motion's 0.2 (ratio 4)."""
    drift_dataset(0.2).save(tmp_path / "d.safetensors")
    out = tmp_path / "m.safetensors"
    code, stdout, err = run_main(
        "fit",
        "--dataset",
        str(tmp_path / "d.safetensors"),
        "--model",
        "gmm",
        "-o",
        str(out),
        "--horizons",
        "1",
        *(["--reject-worse"] if reject else []),
    )
    ratio = re.search(r"RMSE ratio to no motion ([0-9.]+) at horizon 1", err)
    assert ratio and 3.5 < float(ratio.group(1)) < 4.5, err
    lines = [line for line in err.splitlines() if line.startswith("mbrl-ros fit:")]
    if reject:
        assert code == 2 and lines == [err.splitlines()[-1]] and ": error: " in lines[0]
        assert "not written" in lines[0] and not out.exists()
    else:
        assert code == 0 and len(lines) == 1 and lines[0].startswith("mbrl-ros fit: warning: ")
        assert "written anyway" in lines[0] and load_model(read_file(out)).kind == "gmm"


def test_fit_of_a_good_model_warns_nothing(files, tmp_path):
    code, _, err = run_main(
        "fit", "--dataset", files["d"], "--model", "gmm", "-o", str(tmp_path / "m.safetensors")
    )
    assert code == 0 and "warning" not in err


# -- graph arguments that name a choice ------------------------------------------------------------
PLANNER_CHOICES = next(p.choices for p in PlannerSettings.params() if p.name == "planner")


@pytest.mark.parametrize("planner", PLANNER_CHOICES)
def test_every_planner_the_graph_accepts_builds_its_mpc(planner):
    """The graph accepts exactly the planner node's choices, and the node's MPC builds for each
    (``planner:=random_shooting`` raised a KeyError in the node)."""
    specs = graph("mpc", planner=planner)
    assert next(s for s in specs if s.name == "mpc_planner").parameters["planner"] == planner
    robot = load_robot("arm2")
    settings = PlannerSettings(planner=planner, horizon=4, samples=8, elites=2, device="cpu")
    assert build_mpc(robot, range(robot.n_joints), settings).planner.name == planner


def test_unknown_planner_is_a_clear_error_in_the_planner_settings():
    with pytest.raises(ConfigError, match="'planner' = 'random' must be one of .*random_shooting"):
        PlannerSettings(planner="random")
    with pytest.raises(ConfigError, match=r"'horizn' \(did you mean 'horizon'\?\)"):
        PlannerSettings.from_mapping({"horizn": 5})


def test_a_urdf_path_is_a_robot():
    urdf = load_robot("arm2").urdf_path
    assert graph("sim", robot=str(urdf))[0].parameters["robot"] == str(urdf)


# -- as processes: no traceback, and DDS confined like `mbrl-ros launch` ---------------------------
def mbrl_ros_process(*args: str, module: str = "mbrl_ros.cli", env=None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "module,args,fragment",
    [
        (
            "mbrl_ros.cli",
            ["fit", "--dataset", "{out}", "--model", "gmm", "-o", "{out}/m.st"],
            "is a folder",
        ),
        (
            "mbrl_ros.cli",
            ["fit", "--dataset", "{d}", "--model", "mlp", "-o", "{out}/m.st", "--device", NO_CUDA],
            "CUDA device",
        ),
        (
            "mbrl_ros.cli",
            ["eval-model", "{model}", "--dataset", "{d}", "--png", "{out}"],
            "is a folder",
        ),
        ("mbrl_ros.nodes.send_controller", ["--make", "hold", "--dt", "0"], "--dt"),
    ],
)
def test_former_tracebacks_are_one_line_in_a_process(files, tmp_path, module, args, fragment):
    result = mbrl_ros_process(*expand(args, files, tmp_path), module=module)
    prog = (
        "mbrl-ros send-controller" if module.endswith("send_controller") else f"mbrl-ros {args[0]}"
    )
    assert_one_line_error(result.returncode, result.stderr, prog, fragment)
    assert listing(tmp_path) == []


def _environment(domain: int | None) -> dict[str, str]:
    """This process's environment without the DDS settings (plus ROS_DOMAIN_ID=domain)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")
    }
    return env | ({"ROS_DOMAIN_ID": str(domain)} if domain is not None else {})


DOMAIN_LINE = re.compile(r"ROS_DOMAIN_ID=(\d+) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST")


@pytest.mark.ros
@pytest.mark.parametrize("user_domain", [False, True])
def test_send_controller_confines_dds_and_prints_its_domain(files, ros_domain, user_domain):
    """Without ROS_DOMAIN_ID the command picks one and prints it; a subscriber in that domain (on
    localhost) gets the controller. A domain the user set is kept."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mbrl_ros.cli", "send-controller", files["ctrl"], "--wait", "60"],
        env=_environment(ros_domain if user_domain else None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        match = DOMAIN_LINE.search(proc.stdout.readline())
        assert match, "no domain line"
        domain = int(match.group(1))
        assert domain == ros_domain or not user_domain
        received = _receive_controllers(domain, proc)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and re.search(r"to [1-9]\d* subscriber\(s\)", out), err
    assert read_file(files["ctrl"]) in received


def _receive_controllers(
    domain: int, sender: subprocess.Popen, timeout: float = 60.0
) -> list[bytes]:
    """The controllers received on /mbrl/controller in ``domain`` until ``sender`` exits: the
    subscription stays until then, so the sender sees it even if a latched controller of some
    other process in that domain arrived first."""
    import time

    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("controller_listener", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    got: list[bytes] = []
    node.create_subscription(
        UInt8MultiArray, "/mbrl/controller", lambda msg: got.append(bytes(msg.data)), LATCHED_QOS
    )
    try:
        deadline = time.monotonic() + timeout
        while sender.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        executor.spin_once(timeout_sec=0.5)
        return got
    finally:
        node.destroy_node()
        context.try_shutdown()


@pytest.mark.ros
@pytest.mark.parametrize("user_domain", [False, True])
def test_replay_confines_dds_and_prints_its_domain(files, ros_domain, user_domain):
    result = mbrl_ros_process(
        "replay",
        files["bag"],
        "--rate",
        "10",
        env=_environment(ros_domain if user_domain else None),
    )
    match = DOMAIN_LINE.search(result.stdout)
    assert result.returncode == 0 and match, result.stdout + result.stderr
    assert int(match.group(1)) == ros_domain or not user_domain
