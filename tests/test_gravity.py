"""The URDF gravity model against an independent reference: g(q) = ∂V/∂q, V(q) = Σ m_i g z_i(q)
with the centres of mass placed by MuJoCo's kinematics, differentiated by central differences."""

import re

import mujoco
import numpy as np
import pytest

from mbrl_ros.robot.description import RobotDescriptionError, load_robot
from mbrl_ros.robot.gravity import GravityModel


def potential(model: mujoco.MjModel, q: np.ndarray) -> float:
    data = mujoco.MjData(model)
    data.qpos[: len(q)] = q
    mujoco.mj_kinematics(model, data)
    mujoco.mj_comPos(model, data)
    return float(-np.sum(model.body_mass[:, None] * data.xipos * model.opt.gravity))


@pytest.mark.parametrize("name", ["arm2", "arm7"])
def test_gravity_torque_is_the_gradient_of_the_potential_energy(name):
    robot = load_robot(name)
    g = GravityModel(robot)
    rng = np.random.default_rng(0)
    h = 1e-6
    for _ in range(5):
        q = rng.uniform(robot.limits.lower, robot.limits.upper)
        grad = np.array(
            [
                (potential(g.model, q + h * e) - potential(g.model, q - h * e)) / (2 * h)
                for e in np.eye(robot.n_joints)
            ]
        )
        np.testing.assert_allclose(g.torque(q), grad, atol=1e-5 * max(1.0, np.abs(grad).max()))


def test_a_urdf_without_inertials_is_refused_by_name(tmp_path):
    text = load_robot("arm7").urdf_path.read_text()
    stripped = re.sub(r"<inertial>.*?</inertial>", "", text, flags=re.S)
    path = tmp_path / "massless.urdf"
    path.write_text(stripped)
    with pytest.raises(RobotDescriptionError, match="no link with an <inertial> mass"):
        GravityModel(load_robot(path))


def test_bad_positions_are_refused():
    g = GravityModel(load_robot("arm2"))
    with pytest.raises(ValueError, match="2 finite joint positions"):
        g.torque([np.nan, 0.0])
