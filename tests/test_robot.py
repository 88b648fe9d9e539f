"""Robot description, forward kinematics and MuJoCo model (mbrl_ros.robot.description), checked
against MuJoCo."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest
import torch

from mbrl_ros.common.paths import share_path
from mbrl_ros.robot.description import (
    RobotDescriptionError,
    build_mujoco_model,
    build_mujoco_spec,
    load_robot,
    mujoco_joint_indices,
)
from mbrl_ros.robot.kinematics import ForwardKinematics

ARMS = ("arm2", "arm7")
TOL = 1e-9


@pytest.fixture(scope="module", params=ARMS)
def arm(request):
    """(robot, model, fk) for each shipped arm."""
    robot = load_robot(request.param)
    return robot, build_mujoco_model(robot), ForwardKinematics(robot)


def random_q(robot, count, seed=0):
    lower = np.where(np.isinf(robot.limits.lower), -np.pi, robot.limits.lower)
    upper = np.where(np.isinf(robot.limits.upper), np.pi, robot.limits.upper)
    return np.random.default_rng(seed).uniform(lower, upper, (count, robot.n_joints))


def mujoco_frames(model, robot, q):
    """Body positions (L, 3), rotations (L, 3, 3) of robot.link_names and the 'ee' site position."""
    data = mujoco.MjData(model)
    data.qpos[mujoco_joint_indices(model, robot)[0]] = q
    mujoco.mj_kinematics(model, data)
    bodies = [data.body(link) for link in robot.link_names]
    return (
        np.array([b.xpos for b in bodies]),
        np.array([b.xmat.reshape(3, 3) for b in bodies]),
        data.site("ee").xpos.copy(),
    )


def check_fk_against_mujoco(robot, model, fk, count=200, seed=0):
    q = random_q(robot, count, seed)
    positions, rotations = (t.numpy() for t in fk.link_poses(torch.tensor(q)))
    ee = fk.ee_position(torch.tensor(q)).numpy()
    for k in range(count):
        xpos, xmat, site = mujoco_frames(model, robot, q[k])
        np.testing.assert_allclose(positions[k], xpos, rtol=0, atol=TOL)
        np.testing.assert_allclose(rotations[k], xmat, rtol=0, atol=TOL)
        np.testing.assert_allclose(ee[k], site, rtol=0, atol=TOL)


# ---------------------------------------------------------------- forward kinematics


def test_fk_matches_mujoco(arm):
    check_fk_against_mujoco(*arm)


GENERAL_CHAIN = """<robot name="general">
  {links}
  <joint name="mount" type="fixed"><parent link="base"/><child link="l0"/>
    <origin xyz="0.1 -0.2 0.3" rpy="0.3 -0.7 1.1"/></joint>
  <joint name="a" type="revolute"><parent link="l0"/><child link="l1"/>
    <origin xyz="0.05 0.02 0.2" rpy="-1.2 0.4 2.5"/><axis xyz="0.3 -0.5 0.8"/>
    <limit lower="-2" upper="2.5" effort="5" velocity="3"/></joint>
  <joint name="spacer" type="fixed"><parent link="l1"/><child link="l2"/>
    <origin xyz="0 0.15 0.05" rpy="0.9 0.1 -0.4"/></joint>
  <joint name="camera_mount" type="fixed"><parent link="l1"/><child link="camera"/>
    <origin xyz="0 0.1 0"/></joint>
  <joint name="b" type="continuous"><parent link="l2"/><child link="l3"/>
    <origin xyz="0.2 0 0" rpy="0 1.5707963267948966 0"/><axis xyz="0 1 0"/>
    <limit effort="4" velocity="5"/><dynamics damping="0.2"/></joint>
  <joint name="c" type="revolute"><parent link="l3"/><child link="tip"/>
    <origin xyz="0.1 0.1 -0.1" rpy="2.0 -1.0 0.5"/>
    <limit lower="-1" upper="1" effort="2" velocity="4"/><dynamics friction="0.05"/></joint>
</robot>"""


def general_chain(tmp_path):
    links = "\n  ".join(
        f'<link name="{name}"><inertial><mass value="0.3"/>'
        '<inertia ixx="1e-3" iyy="1e-3" izz="1e-3" ixy="0" ixz="0" iyz="0"/></inertial></link>'
        for name in ("base", "l0", "l1", "l2", "l3", "tip", "camera")
    )
    path = tmp_path / "general.urdf"
    path.write_text(GENERAL_CHAIN.format(links=links))
    return path


def test_fk_matches_mujoco_on_a_general_chain(tmp_path):
    """Origins with rpy, a non-unit oblique axis (default x axis on 'c'), fixed joints before,
    inside and off the chain, and a continuous joint."""
    robot = load_robot(general_chain(tmp_path), ee_link="tip")
    assert robot.joint_names == ("a", "b", "c")
    assert robot.link_names == ("base", "l0", "l1", "l2", "l3", "tip")
    assert robot.limits.lower[1] == -np.inf and robot.limits.upper[1] == np.inf
    np.testing.assert_array_equal(robot.damping, [0, 0.2, 0])
    np.testing.assert_array_equal(robot.friction, [0, 0, 0.05])
    model = build_mujoco_model(robot, scene=None)
    assert model.jnt_limited.tolist() == [1, 0, 1]
    check_fk_against_mujoco(robot, model, ForwardKinematics(robot), count=50)


def test_points_with_offsets(arm):
    robot, model, _ = arm
    points = {
        "tip": (robot.ee_link, (0.01, -0.02, 0.03)),
        "elbow": (robot.link_names[2], (0.0, 0.05, 0.0)),
        "base": (robot.link_names[0], (0.0, 0.0, 0.0)),
    }
    fk = ForwardKinematics(robot, points)
    assert fk.point_names == ("tip", "elbow", "base")
    q = random_q(robot, 20, seed=1)
    got = fk.positions(torch.tensor(q)).numpy()
    assert got.shape == (20, 3, 3)
    for k in range(20):
        xpos, xmat, _ = mujoco_frames(model, robot, q[k])
        for p, (link, offset) in enumerate(points.values()):
            i = robot.link_names.index(link)
            np.testing.assert_allclose(got[k, p], xpos[i] + xmat[i] @ offset, rtol=0, atol=TOL)
    with pytest.raises(ValueError, match="nowhere"):
        ForwardKinematics(robot, {"x": ("nowhere", (0, 0, 0))})


def test_jacobian_matches_mujoco_and_finite_differences(arm):
    robot, model, fk = arm
    data = mujoco.MjData(model)
    q = random_q(robot, 20, seed=2)
    jac = fk.jacobian(torch.tensor(q)).numpy()
    assert jac.shape == (20, 3, robot.n_joints)
    jacp = np.zeros((3, model.nv))
    dof = mujoco_joint_indices(model, robot)[1]
    step = 1e-6
    for k in range(20):
        data.qpos[:] = q[k]
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mj_jacSite(model, data, jacp, None, model.site("ee").id)
        np.testing.assert_allclose(jac[k], jacp[:, dof], rtol=0, atol=TOL)
        shift = step * np.eye(robot.n_joints)
        central = (fk.ee_position(q[k] + shift) - fk.ee_position(q[k] - shift)).numpy().T / (
            2 * step
        )
        np.testing.assert_allclose(jac[k], central, rtol=0, atol=1e-8)


def test_batch_shapes_and_inputs(arm):
    robot, _, fk = arm
    n = robot.n_joints
    q = torch.tensor(random_q(robot, 12, seed=3))
    batched = fk.ee_position(q)
    assert fk.ee_position(q[0]).shape == (3,)
    assert fk.positions(q[0]).shape == (1, 3)
    assert fk(q).shape == (12, 1, 3)
    torch.testing.assert_close(
        fk.ee_position(q.view(3, 4, n)), batched.view(3, 4, 3), rtol=0, atol=0
    )
    torch.testing.assert_close(fk.ee_position(q[5]), batched[5], rtol=0, atol=0)
    torch.testing.assert_close(fk.ee_position(q.numpy()), batched, rtol=0, atol=0)  # numpy input
    positions, rotations = fk.link_poses(q.view(3, 4, n))
    assert positions.shape == (3, 4, len(robot.link_names), 3)
    assert rotations.shape == (3, 4, len(robot.link_names), 3, 3)
    assert fk.jacobian(q.view(3, 4, n)).shape == (3, 4, 3, n)
    assert fk.ee_position(q[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match=f"\\(..., {n}\\)"):
        fk.ee_position(torch.zeros(4, n + 1, dtype=torch.float64))


def test_gradients(arm):
    robot, _, fk = arm
    q = torch.tensor(random_q(robot, 3, seed=4), requires_grad=True)
    assert torch.autograd.gradcheck(fk.positions, (q,))
    assert torch.autograd.gradcheck(fk.jacobian, (q,))
    (grad,) = torch.autograd.grad(fk.ee_position(q)[:, 0].sum(), q)
    torch.testing.assert_close(grad, fk.jacobian(q)[:, 0, :].detach(), rtol=0, atol=1e-12)


def test_float32_and_devices(arm):
    robot, _, fk = arm
    q = torch.tensor(random_q(robot, 50, seed=5))
    fk32 = ForwardKinematics(robot, dtype=torch.float32)
    torch.testing.assert_close(
        fk32.ee_position(q.float()).double(), fk.ee_position(q), rtol=0, atol=2e-6
    )
    assert fk32.ee_position(q.float()).dtype == torch.float32
    assert (
        ForwardKinematics(robot).to(torch.float32).ee_position(q).dtype == torch.float32
    )  # q is cast too
    if torch.cuda.is_available():
        gpu = ForwardKinematics(robot, device="cuda")
        torch.testing.assert_close(
            gpu.ee_position(q.cuda()).cpu(), fk.ee_position(q), rtol=0, atol=1e-12
        )


# ---------------------------------------------------------------- MuJoCo model


def test_mujoco_model_matches_urdf(arm):
    robot, model, _ = arm
    n = robot.n_joints
    assert model.nu == n == model.njnt == model.nq == model.nv
    qpos, dof = mujoco_joint_indices(model, robot)
    np.testing.assert_array_equal(qpos, np.arange(n))
    np.testing.assert_array_equal(dof, np.arange(n))
    assert tuple(model.joint(i).name for i in range(n)) == robot.joint_names
    assert tuple(model.actuator(i).name for i in range(n)) == robot.joint_names
    np.testing.assert_array_equal(model.actuator_trnid[:, 0], np.arange(n))
    assert (model.actuator_trntype == mujoco.mjtTrn.mjTRN_JOINT).all()
    np.testing.assert_array_equal(model.actuator_gear[:, 0], np.ones(n))
    assert (model.actuator_gaintype == mujoco.mjtGain.mjGAIN_FIXED).all()
    np.testing.assert_array_equal(model.actuator_gainprm[:, 0], np.ones(n))
    assert (model.actuator_biastype == mujoco.mjtBias.mjBIAS_NONE).all()
    assert model.actuator_ctrllimited.all()
    effort = robot.limits.effort
    np.testing.assert_array_equal(model.actuator_ctrlrange, np.stack([-effort, effort], 1))
    assert model.jnt_limited.all()
    np.testing.assert_array_equal(
        model.jnt_range, np.stack([robot.limits.lower, robot.limits.upper], 1)
    )
    np.testing.assert_array_equal(model.dof_damping, robot.damping)
    np.testing.assert_array_equal(model.dof_frictionloss, robot.friction)
    np.testing.assert_array_equal(model.dof_armature, robot.armature)
    assert robot.damping.min() > 0 and robot.friction.min() > 0
    assert model.site_bodyid[model.site("ee").id] == model.body(robot.ee_link).id
    robot_geoms = np.isin(model.geom_bodyid, [model.body(link).id for link in robot.link_names])
    colliding = robot_geoms & (model.geom_contype != 0)
    assert (
        colliding.any() and (model.geom_group[colliding] == 3).all()
    )  # collision geoms hidden by default
    assert (
        robot_geoms & (model.geom_contype == 0) & (model.geom_group == 1)
    ).any()  # visual geoms kept
    # the scene: floor, a mocap reach target that never collides, implicitfast at 2 ms
    assert model.geom("floor").type == mujoco.mjtGeom.mjGEOM_PLANE
    target = model.body("target")
    assert model.body_mocapid[target.id] >= 0
    geoms = model.geom_bodyid == target.id
    assert (
        geoms.any()
        and not model.geom_contype[geoms].any()
        and not model.geom_conaffinity[geoms].any()
    )
    assert (
        model.opt.timestep == 0.002
        and model.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    )
    np.testing.assert_array_equal(model.opt.gravity, [0, 0, -9.81])


def test_mujoco_options_and_bare_robot():
    robot = load_robot("arm2")
    assert build_mujoco_model(robot, timestep=0.005).opt.timestep == 0.005
    bare = build_mujoco_model(robot, scene=None)
    assert mujoco.mj_name2id(bare, mujoco.mjtObj.mjOBJ_GEOM, "floor") == -1
    assert bare.nu == 2 and bare.site("ee")
    assert isinstance(build_mujoco_spec(robot), mujoco.MjSpec)
    with pytest.raises(ValueError, match="timestep"):
        build_mujoco_spec(robot, timestep=0.0)


def test_arm7_is_a_plausible_arm():
    robot = load_robot("arm7")
    model = build_mujoco_model(robot)
    links = [model.body(link).id for link in robot.link_names]
    total = model.body_mass[links].sum()
    assert 10 <= total <= 25
    assert model.body("link1").mass[0] >= 2 and 0.3 <= model.body("link7").mass[0] <= 1.0
    # inertia tensors as written in the URDF: symmetric positive definite, triangle inequality
    for link in ET.parse(robot.urdf_path).getroot().iter("link"):
        inertia = link.find("inertial/inertia")
        if inertia is None:
            continue
        i = {k: float(v) for k, v in inertia.attrib.items()}
        tensor = np.array(
            [
                [i["ixx"], i["ixy"], i["ixz"]],
                [i["ixy"], i["iyy"], i["iyz"]],
                [i["ixz"], i["iyz"], i["izz"]],
            ]
        )
        principal = np.linalg.eigvalsh(tensor)
        assert principal.min() > 0, link.get("name")
        assert principal[0] + principal[1] >= principal[2], link.get("name")
    # reach: straight up at q = 0, shoulder = joint2
    fk = ForwardKinematics(robot)
    positions, _ = fk.link_poses(torch.zeros(robot.n_joints, dtype=torch.float64))
    shoulder = positions[robot.link_names.index(robot.chain[1].child)]
    reach = (
        (fk.ee_position(torch.zeros(robot.n_joints, dtype=torch.float64)) - shoulder).norm().item()
    )
    assert 0.7 <= reach <= 1.0
    # Panda-like limits
    np.testing.assert_array_equal(robot.limits.effort, [87, 87, 87, 87, 12, 12, 12])
    np.testing.assert_allclose(robot.armature, 0.1)  # reflected motor inertia, 1e-5 kg m² · 100²
    assert ((robot.limits.velocity >= 2.0) & (robot.limits.velocity <= 2.7)).all()
    # holding the arm stretched out horizontally (elbow at its straightest) needs well under the
    # limits
    data = mujoco.MjData(model)
    data.qpos[:] = [0, np.pi / 2, 0, robot.limits.upper[3], 0, 0, 0]
    mujoco.mj_forward(model, data)
    assert abs(data.site("ee").xpos[2] - positions[2, 2].item()) < 0.1  # ee at shoulder height
    gravity = np.abs(data.qfrc_bias)
    assert 20 < gravity[1] < 0.75 * robot.limits.effort[1]
    assert (gravity < 0.75 * robot.limits.effort).all()


def test_arm2_moves_in_the_horizontal_plane():
    robot = load_robot("arm2")
    model = build_mujoco_model(robot)
    data = mujoco.MjData(model)
    for q in random_q(robot, 20, seed=6):
        data.qpos[:] = q
        mujoco.mj_forward(model, data)
        assert np.abs(data.qfrc_bias).max() < 1e-12  # no gravity load at rest
        assert data.site("ee").xpos[2] == pytest.approx(
            data.body("link1").xpos[2], abs=1e-12
        )  # in its plane
    reach = (
        ForwardKinematics(robot).ee_position(torch.zeros(2, dtype=torch.float64))[:2].norm().item()
    )
    assert 0.2 <= reach <= 0.4


# ---------------------------------------------------------------- loading and errors


def test_load_by_name_and_path():
    for name in ARMS:
        by_name = load_robot(name)
        by_path = load_robot(share_path("urdf", f"{name}.urdf").resolve())
        by_str = load_robot(str(by_path.urdf_path))
        assert by_name.name == by_path.name == by_str.name == name
        assert by_name.urdf_path.resolve() == by_path.urdf_path.resolve()
        expected = tuple(f"joint{i + 1}" for i in range(by_name.n_joints))
        assert by_name.joint_names == by_path.joint_names == expected
        assert by_name.ee_link == "ee_link" and by_name.link_names[-1] == "ee_link"
        np.testing.assert_array_equal(by_name.limits.effort, by_path.limits.effort)
        with pytest.raises(ValueError):
            by_name.limits.effort[0] = 1.0  # read-only arrays
    assert load_robot("arm7").n_joints == 7 and load_robot("arm2").n_joints == 2


def test_index_of():
    robot = load_robot("arm7")
    np.testing.assert_array_equal(robot.index_of(["joint3", "joint1"]), [2, 0])
    with pytest.raises(ValueError, match="elbow"):
        robot.index_of(["joint1", "elbow"])


MINIMAL = """<robot name="mini"{namespace}>
  <link name="base"/><link name="l1"><inertial><mass value="1"/>
    <inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial></link>
  <joint name="j1" type="{type}"><parent link="base"/><child link="l1"/><axis xyz="0 0 1"/>
    {limit}</joint>
  {transmission}
</robot>"""
LIMIT = '<limit lower="-1" upper="1" effort="2" velocity="3"/>'
TRANSMISSION = """<transmission name="t1"><type>transmission_interface/SimpleTransmission</type>
    <joint name="{joint}"/><actuator name="m1"><drake:rotor_inertia value="2e-5"/>
    <drake:gear_ratio value="50"/></actuator></transmission>"""


def mini(jtype="revolute", limit=LIMIT, transmission_joint=None):
    """A one-joint URDF; with a Drake transmission (rotor 2e-5 kg m², gear 50) on
    ``transmission_joint``."""
    if transmission_joint is None:
        return MINIMAL.format(type=jtype, limit=limit, namespace="", transmission="")
    return MINIMAL.format(
        type=jtype,
        limit=limit,
        namespace=' xmlns:drake="http://drake.mit.edu"',
        transmission=TRANSMISSION.format(joint=transmission_joint),
    )


def write(tmp_path, text, name="robot.urdf"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_ee_link_is_the_leaf_and_armature(tmp_path):
    robot = load_robot(write(tmp_path, mini()))
    assert robot.ee_link == "l1" and robot.joint_names == ("j1",)
    np.testing.assert_array_equal(robot.armature, [0.0])
    robot = load_robot(write(tmp_path, mini(transmission_joint="j1")))
    np.testing.assert_allclose(robot.armature, [2e-5 * 50**2])
    assert build_mujoco_model(robot, scene=None).dof_armature[0] == pytest.approx(0.05)


@pytest.mark.parametrize(
    "text, message",
    [
        ("<robot><link name='a'/>", "malformed XML"),
        ("<model/>", "expected <robot>"),
        (mini(limit=""), "joint 'j1' has no <limit>"),
        (mini(limit='<limit effort="2" velocity="3"/>'), "no 'lower'"),
        (mini(limit='<limit lower="1" upper="-1" effort="2" velocity="3"/>'), "lower limit"),
        (mini(limit='<limit lower="-1" upper="1" effort="0" velocity="3"/>'), "positive effort"),
        (mini("continuous", '<limit effort="2" velocity="-3"/>'), "positive effort and velocity"),
        (mini("prismatic"), "type 'prismatic'"),
        (mini("fixed", ""), "no revolute or continuous joint"),
        (mini(limit=LIMIT.replace('"2"', '"two"')), "not a list of numbers"),
        (mini(transmission_joint="j9"), "transmission 't1' drives \\['j9'\\]"),
        (mini().replace('<link name="base"/>', "<link/>"), "a <link> has no 'name'"),
    ],
)
def test_bad_urdf(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(RobotDescriptionError, match=message) as error:
        load_robot(path)
    assert str(path) in str(error.value)


def test_missing_files_and_bad_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_arm"):
        load_robot("no_such_arm")
    missing = tmp_path / "gone.urdf"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_robot(missing)
    path = write(tmp_path, mini())
    with pytest.raises(RobotDescriptionError, match="ee_link 'hand'") as error:
        load_robot(path, ee_link="hand")
    assert str(path) in str(error.value)
    with pytest.raises(
        RobotDescriptionError, match="several leaf links"
    ):  # a branch: ee_link must be chosen
        load_robot(general_chain(tmp_path))
    with pytest.raises(
        RobotDescriptionError, match="not on the chain"
    ):  # actuated joint off the chain
        load_robot(general_chain(tmp_path), ee_link="camera")
    robot = load_robot("arm2")
    with pytest.raises(FileNotFoundError, match="no_such_scene"):
        build_mujoco_model(robot, scene="no_such_scene")
    with pytest.raises(FileNotFoundError, match="gone.xml"):
        build_mujoco_model(robot, scene=tmp_path / "gone.xml")
    broken = write(
        tmp_path, "<mujoco><worldbody><geom type='nonsense'/></worldbody></mujoco>", "broken.xml"
    )
    with pytest.raises(RobotDescriptionError, match="broken.xml"):
        build_mujoco_model(robot, scene=broken)
