"""arm_sim's camera over real DDS: every joint state comes with an image (same stamp) that decodes
to exactly the frame the simulator renders offline, the target marker follows /mbrl/target, and
the camera's start-up errors name the problem."""

import threading
import time

import numpy as np
import pytest
from camera_testing import require_gl
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from ros_harness import wait_for
from sensor_msgs.msg import CameraInfo, Image
from test_sim_node import Driver, sim_params

from mbrl_ros.common.msgconv import read_image, stamp_to_ns
from mbrl_ros.data.topics import CAMERA_INFO, IMAGES
from mbrl_ros.nodes.messages import STATE_QOS, TARGET_QOS, command_msg, time_msg
from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.camera import Camera
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig

pytestmark = pytest.mark.ros

TARGET = (0.12, 0.15, 0.07)  # m, in the arm2 camera's view
TARGET_STEP = 4  # the target holds from this state's stamp on


def _saw_target(statuses) -> bool:
    return any(
        kv.key == "received /mbrl/target" and int(kv.value) > 0
        for st in statuses
        if st.name.startswith("arm_sim")
        for kv in st.values
    )


def test_images_decode_to_the_rendered_frames(ros, node_process):
    require_gl()
    robot = load_robot("arm2")
    steps, period = 12, 10_000_000
    torques = np.random.default_rng(3).uniform(-0.5, 0.5, (steps, 2)) * robot.limits.effort
    # the state before TARGET_STEP is answered by the test once the sim has the target: the
    # sim renders state TARGET_STEP's image as it publishes that state (the target, stamped
    # then, came too late for it in one full run under load)
    held = TARGET_STEP - 1
    driver = Driver(
        ros,
        robot,
        answer=lambda k, s: (
            None if k == held or k >= steps else command_msg(torques[k], s.stamp_ns)
        ),
    )
    images, infos, statuses = [], [], []
    lock = threading.Lock()

    def keep(store):
        def on(msg):
            with lock:
                store.append(msg)

        return on

    driver.node.create_subscription(Image, IMAGES, keep(images), STATE_QOS)
    driver.node.create_subscription(CameraInfo, CAMERA_INFO, keep(infos), STATE_QOS)
    driver.node.create_subscription(
        DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), 10
    )
    target_pub = driver.node.create_publisher(PointStamped, "/mbrl/target", TARGET_QOS)
    target = PointStamped()
    target.header.stamp = time_msg(TARGET_STEP * period)
    target.point.x, target.point.y, target.point.z = TARGET
    target_pub.publish(target)
    node_process(
        "arm_sim", sim_params(robot="arm2", camera=True, camera_width=48, camera_height=40, seed=2)
    )
    wait_for(
        lambda: driver.count() == held + 1 and _saw_target(list(statuses)),
        60,
        "the sim's report that it has the target",
    )
    driver.pub.publish(command_msg(torques[held], held * period))
    wait_for(
        lambda: driver.count() == steps + 1 and len(images) == len(infos) == steps + 1,
        60,
        "all states, images and camera infos",
    )

    offline = ArmSimulator(robot, SimConfig(seed=2))
    with Camera(offline.model, "solar", 48, 40) as camera:
        expected = [offline.render(camera)]
        for k, tau in enumerate(torques):
            offline.step(tau)
            if k + 1 == TARGET_STEP:
                offline.set_target(np.array(TARGET))
            expected.append(offline.render(camera))
        intrinsics = camera.intrinsics()
    stamps = [k * period for k in range(steps + 1)]
    assert [s.stamp_ns for s in driver.states] == stamps
    assert [stamp_to_ns(m.header.stamp) for m in images] == stamps
    assert [stamp_to_ns(m.header.stamp) for m in infos] == stamps
    for k, (msg, frame) in enumerate(zip(images, expected)):
        assert (msg.encoding, msg.width, msg.height) == ("rgb8", 48, 40)
        np.testing.assert_array_equal(read_image(msg), frame, err_msg=f"image {k}")
    assert not np.array_equal(expected[TARGET_STEP - 1], expected[TARGET_STEP]), (
        "the target marker must appear in the image"
    )
    fx, fy, cx, cy = intrinsics
    np.testing.assert_allclose(infos[0].k, [fx, 0, cx, 0, fy, cy, 0, 0, 1])
    assert infos[0].header.frame_id == images[0].header.frame_id == "solar_camera_optical_frame"


def test_wait_for_target_holds_the_first_state_until_the_target_so_every_frame_draws_it(
    ros, node_process
):
    """Automatic episodes with wait_for_target (the 'solar' graph): with its peers there the sim
    publishes nothing until the first episode's target comes; then the first frame already
    shows it (the episode manager's target came late under load once, and the first frames of
    a SOLAR episode were rendered without the goal)."""
    require_gl()
    robot = load_robot("arm2")
    steps = 3
    driver = Driver(ros, robot, answer=lambda k, s: command_msg(np.zeros(2), s.stamp_ns))
    images = []
    driver.node.create_subscription(Image, IMAGES, images.append, STATE_QOS)
    node_process(
        "arm_sim",
        sim_params(robot="arm2", camera=True, episode_steps=steps, wait_for_target=True, seed=2),
    )
    target_pub = driver.node.create_publisher(PointStamped, "/mbrl/target", TARGET_QOS)
    wait_for(
        lambda: target_pub.get_subscription_count() > 0 and driver.pub.get_subscription_count() > 0,
        60,
        "the sim's target and command subscriptions",
    )
    time.sleep(1.0)  # the sim's peers are there; only the target is missing
    assert driver.count() == 0 and not images
    target = PointStamped()
    target.header.stamp = time_msg(0)
    target.point.x, target.point.y, target.point.z = TARGET
    target_pub.publish(target)
    wait_for(lambda: len(images) > steps, 60, "the first episode's images")
    offline = ArmSimulator(robot, SimConfig(seed=2))
    offline.set_target(np.array(TARGET))
    with Camera(offline.model, "solar", 64, 64) as camera:
        np.testing.assert_array_equal(read_image(images[0]), offline.render(camera))
    assert stamp_to_ns(images[0].header.stamp) == driver.states[0].stamp_ns == 0


@pytest.mark.parametrize(
    "params, message",
    [
        ({"camera_name": "fisheye"}, "no camera 'fisheye'"),
        ({"mode": "hardware", "control_period": 0.002}, "needs mode lockstep or realtime"),
        ({"camera_width": 5000}, "'camera_width' = 5000 is out of range"),
    ],
)
def test_camera_startup_errors_name_the_problem(node_process, params, message):
    if "camera_name" in params:
        require_gl()
    proc = node_process("arm_sim", {"robot": "arm2", "camera": True} | params)
    assert proc.wait(60) == 2
    out = proc.output()
    assert "[arm_sim] cannot start" in out and message in out, out
    assert "Traceback" not in out
