"""Simulator speed on the 7-DOF arm: raw MuJoCo steps/s and the simulator core's control steps/s
and real-time factor (control period 10 ms = 5 physics steps of 2 ms)."""
import time

import mujoco
import numpy as np

from mbrl_ros.robot import load_robot
from mbrl_ros.simulation import ArmSimulator, SimConfig


def rate(fn, seconds=2.0):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def main():
    robot = load_robot("arm7")
    sim = ArmSimulator(robot, SimConfig(physics_timestep=0.002, control_period=0.01))
    torque = 0.2 * robot.limits.effort
    raw = rate(lambda: mujoco.mj_step(sim.model, sim.data))
    raw5 = rate(lambda: mujoco.mj_step(sim.model, sim.data, nstep=5))
    control = rate(lambda: (sim.step(torque), sim.measure()))
    print("== bench_sim: 7-DOF arm, MuJoCo", mujoco.__version__)
    print(f"raw mj_step (2 ms):           {raw:10.0f} steps/s   real-time factor {raw * 0.002:7.1f}")
    print(f"ArmSimulator step+measure:    {control:10.0f} steps/s   real-time factor "
          f"{control * 0.01:7.1f}  (10 ms control period)")
    print(f"core overhead per control step: {1e6 / control - 1e6 / raw5:6.1f} µs on top of "
          f"mj_step(nstep=5) ({1e6 / raw5:.1f} µs)")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
