"""Offscreen camera rendering (``mbrl_ros.simulator.camera``) against the physics it observes.

For 64×64 and 128×128 frames of the 'solar' camera: frames/s of ``ArmSimulator.render`` (pose
update, scene update, render, read-back; the OpenGL backend is ``camera.gl_backend()``, OSMesa on
a headless machine), the cost of one frame relative to one control-period physics step of the
same arm (10 ms = 5 MuJoCo steps of 2 ms) and to the control period itself, and what a recording
of the camera costs: bytes of one sensor_msgs/Image (CDR, as the recorder writes it) and MiB per
hour at 20 Hz and at the simulator's 100 Hz. One more row renders 64×64 with shadows, reflections
and skybox (``Camera(effects=True)``), which the camera leaves out by default.

    python benchmarks/bench_render.py [--robot arm2] [--seconds 2] [--json FILE]
"""

import argparse
import json
import sys
import time

import numpy as np

from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.camera import Camera, CameraError, gl_backend
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig

CASES = ((64, False), (128, False), (64, True))  # (size in pixels, effects)
CONTROL_PERIOD = 0.01  # s


def per_second(fn, seconds: float) -> float:
    """Calls of ``fn`` per wall second over about ``seconds`` (after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def image_bytes(width: int, height: int) -> int:
    """Serialised size of one rgb8 sensor_msgs/Image (CDR), or 0 where rclpy is missing."""
    try:
        from rclpy.serialization import serialize_message

        from mbrl_ros.nodes.messages import image_msg
    except ImportError:
        return 0
    return len(
        serialize_message(
            image_msg(0, "solar_camera_optical_frame", np.zeros((height, width, 3), np.uint8))
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="arm2")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    robot = load_robot(args.robot)
    sim = ArmSimulator(robot, SimConfig(control_period=CONTROL_PERIOD))
    rng = np.random.default_rng(0)
    torque = lambda: rng.uniform(-0.3, 0.3, robot.n_joints) * robot.limits.effort  # noqa: E731
    steps_per_s = per_second(lambda: sim.step(torque()), args.seconds)
    result = {
        "robot": robot.name,
        "backend": gl_backend(),
        "control_period_s": CONTROL_PERIOD,
        "physics_control_steps_per_s": steps_per_s,
        "sizes": {},
    }
    print(f"== bench_render: {robot.name}, OpenGL backend {gl_backend()}")
    print(
        f"physics, one control period (10 ms = {sim.n_substeps} steps): "
        f"{steps_per_s:9.0f} steps/s ({1e6 / steps_per_s:7.1f} µs)"
    )
    for size, effects in CASES:
        try:
            camera = Camera(sim.model, "solar", size, size, effects=effects)
        except CameraError as exc:
            print(f"rendering unavailable: {exc}")
            result["error"] = str(exc)
            break
        with camera:

            def frame():
                sim.step(torque())  # a new state each frame, as in the simulator node
                sim.render(camera)

            with_step = per_second(frame, args.seconds)
        frame_s = 1 / with_step - 1 / steps_per_s
        size_bytes = image_bytes(size, size)
        row = {
            "frames_per_s": 1 / frame_s,
            "frame_ms": 1e3 * frame_s,
            "frame_per_physics_step": frame_s * steps_per_s,
            "fraction_of_control_period": frame_s / CONTROL_PERIOD,
            "image_message_bytes": size_bytes,
            "bag_mib_per_hour_20hz": size_bytes * 20 * 3600 / 2**20,
            "bag_mib_per_hour_100hz": size_bytes * 100 * 3600 / 2**20,
        }
        name = f"{size}x{size}" + ("_effects" if effects else "")
        result["sizes"][name] = row
        print(
            f"{name:>14}: {row['frames_per_s']:7.0f} frames/s "
            f"({row['frame_ms']:6.2f} ms = {row['frame_per_physics_step']:5.1f} physics "
            f"control steps, {100 * row['fraction_of_control_period']:5.1f} % of the 10 ms "
            f"period); Image {size_bytes / 1024:5.1f} KiB: "
            f"{row['bag_mib_per_hour_20hz']:6.0f} MiB/h at 20 Hz, "
            f"{row['bag_mib_per_hour_100hz']:6.0f} MiB/h at 100 Hz"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
