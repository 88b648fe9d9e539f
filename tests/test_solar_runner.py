"""The solar_runner node over real DDS, in lockstep with the simulator's camera: its commands are
the latent controller's torques for the camera's frames (the same as ``ImageController`` offline,
frame stack restarted at each episode), the hold past the controller's end and on a frame that
does not come (stale image), a clean stop on SIGINT; bad files are refused naming the parameter;
and the 'solar' graph's episode equals the same controller run offline."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from camera_testing import require_gl
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_harness import CommandProbe, NodeProcess, RosHarness, launch_graph, wait_for
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, UInt8MultiArray

from mbrl_ros.common.artifacts import write_file
from mbrl_ros.common.msgconv import read_command, read_image, seconds_to_ns, stamp_to_ns
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.nodes.messages import LATCHED_QOS, STATE_QOS, image_msg, joint_state_msg
from mbrl_ros.nodes.params import ConfigError
from mbrl_ros.nodes.solar_runner import SolarRunnerNode
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.camera import Camera
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.solar.controller import LATENT_LAYOUT, ImageController
from mbrl_ros.solar.model import SolarModel
from mbrl_ros.solar.vae import VAEConfig

pytestmark = pytest.mark.ros

ROBOT = load_robot("arm2")
NAMES = list(ROBOT.joint_names)
DT = 0.01
DT_NS = seconds_to_ns(DT)
STEPS = 10  # controller steps = the simulator's episode_steps
START = [0.3, 0.5]


def artifacts(tmp_path):
    """(model, controller, their files): a small untrained SOLAR model and a latent feedback
    controller whose torques depend visibly on the image."""
    model = SolarModel(
        VAEConfig(image_size=64, latent_dim=4, frames=2, channels=4, hidden=16), du=2, seed=3
    )
    rng = np.random.default_rng(0)
    c = LinearGaussianController.feedback(
        np.zeros((STEPS, 4)),
        np.tile([0.3, -0.2], (STEPS, 1)),
        rng.normal(0, 0.5, (STEPS, 2, 4)),
        dt_ns=DT_NS,
        joint_names=NAMES,
        state_layout=LATENT_LAYOUT,
    )
    model_path, ctrl_path = tmp_path / "solar_model.safetensors", tmp_path / "ctrl.safetensors"
    write_file(model_path, model.to_bytes())
    write_file(ctrl_path, c.to_bytes())
    return model, c, model_path, ctrl_path


class Relay:
    """Test node between the sim and the runner: forwards joint states and images (the images
    only for stamps before ``image_until_ns``) once the runner listens; records what it forwards
    and the commands."""

    def __init__(self, ros, image_until_ns: int):
        self.node: Node = ros.node("relay")
        self.lock = threading.Lock()
        self.image_until_ns = image_until_ns
        self.images: dict[int, np.ndarray] = {}
        self.commands: list[tuple[np.ndarray, int]] = []
        self.queue: list = []
        self.state_pub = self.node.create_publisher(JointState, "/relay/joint_states", STATE_QOS)
        self.image_pub = self.node.create_publisher(Image, "/relay/image", STATE_QOS)
        self.node.create_subscription(
            JointState, "/joint_states", lambda m: self._queue(self.state_pub, m), STATE_QOS
        )
        self.node.create_subscription(Image, "/camera/image_raw", self._on_image, STATE_QOS)
        self.node.create_subscription(
            Float64MultiArray, "/effort_controller/commands", self._on_command, STATE_QOS
        )
        self.node.create_timer(0.01, self._flush)

    def _on_image(self, msg) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp < self.image_until_ns:
            with self.lock:
                self.images[stamp] = read_image(msg)
            self._queue(self.image_pub, msg)

    def _queue(self, pub, msg) -> None:
        with self.lock:
            self.queue.append((pub, msg))
        self._flush()

    def _flush(self) -> None:
        if (
            self.state_pub.get_subscription_count() < 1
            or self.image_pub.get_subscription_count() < 1
        ):
            return  # the runner is not listening yet: nothing is lost
        with self.lock:
            queue, self.queue = self.queue, []
        for pub, msg in queue:
            pub.publish(msg)

    def _on_command(self, msg) -> None:
        with self.lock:
            self.commands.append(read_command(msg, 2))

    def n_commands(self) -> int:
        with self.lock:
            return len(self.commands)


def expected_commands(model, controller, images: dict[int, np.ndarray], n: int):
    """The runner's torque for each of the first ``n`` states (None: the hold), offline."""
    clock_steps = STEPS + 1
    out, ic = [], None
    for i in range(n):
        e, k = divmod(i, clock_steps)
        if k == 0:
            ic = ImageController(model, controller, ROBOT.limits.effort)
        stamp = i * DT_NS
        if stamp not in images:
            out.append(None)
            continue
        ic.push(images[stamp])
        out.append(ic.act(k) if k < STEPS else None)
    return out


@pytest.mark.timeout(120)
def test_runner_drives_the_sim_arm_from_camera_images_and_holds_on_a_stale_image(tmp_path):
    """Lockstep: sim (camera) → relay → runner → sim. The first 15 states' frames are relayed
    (episode 0: 11 states, episode 1: 4), then none: the runner holds (zero torque) after
    image_timeout, and the sim goes on with the holds. SIGINT stops both with status 0."""
    require_gl()
    model, controller, model_path, ctrl_path = artifacts(tmp_path)
    with_images, total = 15, 18
    ros = RosHarness()
    relay = Relay(ros, with_images * DT_NS)
    sim = runner = None
    try:
        sim = NodeProcess(
            "arm_sim",
            {
                "robot": "arm2",
                "mode": "lockstep",
                "camera": True,
                "episode_steps": STEPS,
                "initial_position": START,
                "lockstep_timeout": 60.0,
                "min_state_subscribers": 1,
                "use_sim_time": False,
            },
            tmp_path,
        )
        runner = NodeProcess(
            "solar_runner",
            {
                "robot": "arm2",
                "mode": "sync",
                "control_period": DT,
                "episode_steps": STEPS,
                "model_file": str(model_path),
                "controller_file": str(ctrl_path),
                "hold_law": "zero",
                "image_timeout": 1.0,
                "use_sim_time": True,
                # the sim and the relay: with the relay alone the first command could go out
                # before DDS had matched the sim (which then waits lockstep_timeout)
                "min_command_subscribers": 2,
            },
            tmp_path,
            remappings={"joint_states": "/relay/joint_states", "camera/image_raw": "/relay/image"},
        )
        wait_for(
            lambda: relay.n_commands() >= total,
            90,
            f"{total} commands\n{runner.output()[-3000:]}\n{sim.output()[-2000:]}",
        )
        assert runner.stop() == 0 and sim.stop() == 0
        out = runner.log_path.read_text()
        assert "Traceback" not in out and "[ERROR]" not in out, out
        assert "lockstep_timeouts" not in sim.log_path.read_text()  # every state answered
    finally:
        for proc in (runner, sim):
            if proc is not None:
                proc.stop()
        ros.close()
    with relay.lock:
        commands, images = relay.commands[:total], dict(relay.images)
    assert [tag for _, tag in commands] == [i * DT_NS for i in range(total)]
    assert sorted(images) == [i * DT_NS for i in range(with_images)]
    want = expected_commands(model, controller, images, total)
    held = [i for i, u in enumerate(want) if u is None]
    assert held == [STEPS] + list(range(with_images, total))  # controller's end, stale images
    for i, ((u, _), w) in enumerate(zip(commands, want)):
        if w is None:
            np.testing.assert_array_equal(u, np.zeros(2), err_msg=f"state {i}")
        else:
            assert np.abs(w).max() > 0.05  # the controller acts (not a hold)
            np.testing.assert_allclose(u, w, rtol=1e-5, atol=1e-7, err_msg=f"state {i}")


def test_bad_files_are_refused_naming_the_parameter(tmp_path):
    model, controller, model_path, ctrl_path = artifacts(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not an artifact")
    wrong = tmp_path / "wrong_dz.safetensors"
    write_file(
        wrong,
        LinearGaussianController.feedback(
            np.zeros((STEPS, 3)),
            np.zeros((STEPS, 2)),
            np.zeros((STEPS, 2, 3)),
            dt_ns=DT_NS,
            joint_names=NAMES,
            state_layout=LATENT_LAYOUT,
        ).to_bytes(),
    )
    ros = RosHarness()
    try:
        for params, match in (
            ({"model_file": str(bad)}, "'model_file'"),
            (
                {"model_file": str(model_path), "controller_file": str(wrong)},
                r"'controller_file'.*\(dz, du\) = \(4, 2\)",
            ),
            ({"controller_file": str(tmp_path / "missing")}, "'controller_file'"),
        ):
            overrides = [Parameter("robot", value="arm2")] + [
                Parameter(k, value=v) for k, v in params.items()
            ]
            with pytest.raises(ConfigError, match=match):
                SolarRunnerNode(context=ros.context, parameter_overrides=overrides)
    finally:
        ros.close()


def offline_final_distance(model, controller, steps: int) -> float:
    """The task of config/solar.yaml run without ROS: the simulator and its camera, the
    ImageController's mean torque per frame; the end effector's final distance (m)."""
    target = np.array([0.054568386016417725, 0.21671910485401022, 0.07])
    sim = ArmSimulator(ROBOT, SimConfig(initial_position=tuple(START)))
    sim.set_target(target)
    camera = Camera(sim.model, "solar", 64, 64)
    ic = ImageController(model, controller, ROBOT.limits.effort)
    for t in range(steps):
        ic.push(sim.render(camera))
        sim.step(ic.act(t))
    camera.close()
    ee = ForwardKinematics(ROBOT).ee_position(torch.as_tensor(sim.measure().position))
    return float(np.linalg.norm(ee.numpy() - target))


@pytest.mark.timeout(120)
def test_solar_graph_equals_the_controller_run_offline(tmp_path):
    """`mbrl-ros launch solar` with files: the episode manager scores the episode at the task's
    target and ends the graph; the final distance is the one of the same model and controller
    run offline on the simulator's camera (lockstep is exact: same frames, same torques)."""
    require_gl()
    model, _, model_path, _ = artifacts(tmp_path)
    steps = 50  # config/solar.yaml's episode_steps
    rng = np.random.default_rng(1)
    controller = LinearGaussianController.feedback(
        np.zeros((steps, 4)),
        np.tile([0.4, -0.3], (steps, 1)),
        rng.normal(0, 0.5, (steps, 2, 4)),
        dt_ns=DT_NS,
        joint_names=NAMES,
        state_layout=LATENT_LAYOUT,
    )
    ctrl_path = write_file(tmp_path / "ctrl50.safetensors", controller.to_bytes())
    out = tmp_path / "run"
    result = launch_graph(
        [
            "solar",
            f"model_file:={model_path}",
            f"controller_file:={ctrl_path}",
            "episodes:=1",
            f"output_dir:={out}",
        ],
        timeout=100,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 1, records
    np.testing.assert_allclose(records[0]["target"], [0.0546, 0.2167, 0.07], atol=1e-4)
    want = offline_final_distance(model, controller, steps)
    start = offline_final_distance(model, controller, 0)
    assert abs(want - start) > 0.01  # the controller moves the arm
    # Once failed in a full suite run (0.0709 vs 0.0626 m), never alone nor beside a CPU hog:
    # say everything the graph said when it does.
    assert records[0]["final_distance"] == pytest.approx(want, abs=1e-6), (
        f"{records}; graph output:\n{result.stdout[-6000:]}"
    )


class Probe(CommandProbe):
    """Test node for a runner in this process: publishes states, images and artifacts."""

    def __init__(self, ros):
        self.node = ros.node("probe")
        self.lock = threading.Lock()
        self.commands: list[tuple[np.ndarray, int | None]] = []
        self.state_pub = self.node.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.image_pub = self.node.create_publisher(Image, "/camera/image_raw", STATE_QOS)
        self.model_pub = self.node.create_publisher(
            UInt8MultiArray, "/mbrl/solar_model", LATCHED_QOS
        )
        self.ctrl_pub = self.node.create_publisher(UInt8MultiArray, "/mbrl/controller", LATCHED_QOS)
        self.node.create_subscription(
            Float64MultiArray, "/effort_controller/commands", self._on_command, STATE_QOS
        )
        self.estop = None

    def _on_command(self, msg):
        with self.lock:
            self.commands.append(read_command(msg, 2))

    def n_commands(self):
        with self.lock:
            return len(self.commands)

    def send_state(self, stamp_ns, q, qd):
        self.state_pub.publish(
            joint_state_msg(
                stamp_ns, NAMES, np.asarray(q, float), np.asarray(qd, float), np.zeros(2)
            )
        )


def test_realtime_acts_on_recent_frames_and_holds_on_old_ones_artifacts_from_topics(ros, tmp_path):
    """Realtime: without a model the hold; model and controller from their topics (a
    controller for other joints is refused); the newest frame within max_image_age gives the
    controller's torque (its own time index), an older one the hold."""
    model, controller, *_ = artifacts(tmp_path)
    node = SolarRunnerNode(
        context=ros.context,
        parameter_overrides=[
            Parameter(k, value=v)
            for k, v in {
                "robot": "arm2",
                "mode": "realtime",
                "control_period": DT,
                "hold_law": "zero",
                "max_image_age": 0.05,
                "max_state_age": 0.0,
                "max_stamp_ahead": 0.0,
            }.items()
        ],
    )
    ros.add(node)
    probe = Probe(ros)
    wait_for(
        lambda: (
            probe.state_pub.get_subscription_count() > 0
            and probe.image_pub.get_subscription_count() > 0
            and probe.ctrl_pub.get_subscription_count() > 0
            and probe.node.count_publishers("/effort_controller/commands") > 0
        ),
        10,
        "probe ↔ solar runner discovery",
    )
    frames = np.random.default_rng(2).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(probe.answer(0, START, [0, 0]), np.zeros(2))  # no model
    probe.model_pub.publish(UInt8MultiArray(data=model.to_bytes()))
    other = LinearGaussianController.feedback(
        controller.x_hat,
        controller.u_hat,
        controller.K,
        dt_ns=DT_NS,
        joint_names=NAMES[::-1],
        state_layout=LATENT_LAYOUT,
    )
    probe.ctrl_pub.publish(UInt8MultiArray(data=other.to_bytes()))
    wait_for(lambda: node.diag.counters["rejected_controller"] == 1, 10, "a refused controller")
    probe.ctrl_pub.publish(UInt8MultiArray(data=controller.to_bytes()))
    wait_for(lambda: node.image_controller is not None, 10, "model and controller taken")
    ic = ImageController(model, controller, ROBOT.limits.effort)
    for k in (1, 2):  # (stamp 0 was answered already: a repeated stamp is ignored)
        probe.image_pub.publish(image_msg(k * DT_NS, "cam", frames[k]))
        wait_for(lambda: node.newest is not None and node.newest[0] == k * DT_NS, 10, f"frame {k}")
        ic.push(frames[k])
        np.testing.assert_allclose(
            probe.answer(k * DT_NS, START, [0, 0]), ic.act(k), rtol=1e-5, atol=1e-7
        )
    # 60 ms after the newest frame (max_image_age 50 ms): the hold
    np.testing.assert_array_equal(probe.answer(8 * DT_NS, START, [0, 0]), np.zeros(2))
    assert node.diag.counters["stale_image"] == 1
