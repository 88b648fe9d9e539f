"""Physics-parameter model: recovers deliberately perturbed parameters of the simulated 2-link
arm, predicts like the simulator, differentiates, round-trips, refuses other robots."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch
from dynamics_systems import arm_dataset, linear_dataset, one_step_rmse

from mbrl_ros.common.artifacts import ArtifactError, encode, read_header
from mbrl_ros.dynamics.base import ModelError, ModelSignature, model_from_bytes
from mbrl_ros.dynamics.physics import PhysicsConfig, PhysicsModel
from mbrl_ros.robot.description import build_mujoco_model, load_robot

torch.set_num_threads(1)
TRUE = {
    "damping/joint1": 0.30,
    "damping/joint2": 0.20,  # URDF ×2
    "frictionloss/joint1": 0.015,
    "frictionloss/joint2": 0.0075,  # URDF ×1.5
    "armature/joint1": 0.010,
    "armature/joint2": 0.005,  # URDF 0
    "mass_scale/link1": 1.0,
    "mass_scale/link2": 1.3,
}


def perturb(m):
    m.dof_damping[:2] = [TRUE["damping/joint1"], TRUE["damping/joint2"]]
    m.dof_frictionloss[:2] = [TRUE["frictionloss/joint1"], TRUE["frictionloss/joint2"]]
    m.dof_armature[:2] = [TRUE["armature/joint1"], TRUE["armature/joint2"]]
    link2 = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "link2")
    m.body_mass[link2] *= 1.3
    m.body_inertia[link2] *= 1.3


@pytest.fixture(scope="module")
def perturbed():
    data = arm_dataset("arm2", episodes=6, steps=100, seed=2, perturb=perturb)
    train, val = data.split(0.34, seed=0)
    model = PhysicsModel(ModelSignature.of(data), device="cpu", config=PhysicsConfig(robot="arm2"))
    report = model.fit(train, val)
    return model, report, val


def inertia_matrices(m: mujoco.MjModel, n_poses: int = 5) -> np.ndarray:
    """Joint-space inertia M(q) (armature included) at a few fixed poses: (n_poses, nv, nv)."""
    d = mujoco.MjData(m)
    out = []
    for q in np.random.default_rng(0).uniform(-1.5, 1.5, (n_poses, m.nq)):
        d.qpos[:] = q
        mujoco.mj_forward(m, d)
        full = np.zeros((m.nv, m.nv))
        mujoco.mj_fullM(m, d, full)
        out.append(full)
    return np.array(out)


def true_model() -> mujoco.MjModel:
    m = build_mujoco_model(load_robot("arm2"), "scene", 0.002)
    perturb(m)
    return m


def test_recovers_perturbed_parameters(perturbed):
    """Damping ×2, friction loss ×1.5, armature 0 → 0.01/0.005, link2 mass and inertia ×1.3:
    recovered within 3 % (noise-free data, 400 transitions). In the planar arm, link1's mass
    scale and joint1's armature act only through the inertia about joint 1 and are not separately
    identifiable; what is identifiable, the joint-space inertia matrix M(q), matches to 1 %."""
    model, report, val = perturbed
    assert not report.rolled_back, report.message
    for name, true in TRUE.items():
        if name not in ("mass_scale/link1", "armature/joint1"):
            assert model.params[name] == pytest.approx(true, rel=0.03), name
    np.testing.assert_allclose(
        inertia_matrices(model.sim.model), inertia_matrices(true_model()), rtol=0.01, atol=1e-6
    )
    # and predicts held-out transitions to 0.2 % of std(Δs)
    assert np.all(one_step_rmse(model, val) < 2e-3)
    assert report.val_loss and report.val_loss[-1] < 1e-5


def test_nominal_model_equals_the_simulator():
    """With the URDF's own parameters the model reproduces the simulator's steps exactly."""
    data = arm_dataset("arm2", episodes=1, steps=40, seed=7)
    model = PhysicsModel(ModelSignature.of(data), device="cpu", config=PhysicsConfig(robot="arm2"))
    nxt = model.sim.step(data.states, data.actions)
    np.testing.assert_allclose(nxt, data.next_states, rtol=0, atol=1e-12)


def test_gradient_matches_finite_differences(perturbed):
    model, _, val = perturbed
    s = torch.as_tensor(val.states[:3]).clone().requires_grad_(True)
    a = torch.as_tensor(val.actions[:3]).clone().requires_grad_(True)
    w = torch.as_tensor(np.random.default_rng(0).normal(size=(3, 4)))
    (model.predict(s, a)[0] * w).sum().backward()
    eps = 1e-6
    for x, grad in ((s, s.grad), (a, a.grad)):
        fd = torch.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            plus, minus = x.detach().clone(), x.detach().clone()
            plus[idx] += eps
            minus[idx] -= eps
            args_p = (plus, a.detach()) if x is s else (s.detach(), plus)
            args_m = (minus, a.detach()) if x is s else (s.detach(), minus)
            diff = model.predict(*args_p)[0] - model.predict(*args_m)[0]
            fd[idx] = (diff * w).sum() / (2 * eps)
        torch.testing.assert_close(grad, fd, rtol=1e-4, atol=1e-6)


def test_artifact_round_trip_and_other_robot(perturbed, tmp_path):
    model, _, val = perturbed
    data = model.to_bytes()
    back = model_from_bytes(data, device="cpu")
    assert back.params == model.params
    s, a = torch.as_tensor(val.states), torch.as_tensor(val.actions)
    for x, y in zip(model.predict(s, a), back.predict(s, a)):
        assert torch.equal(x, y)
    tensors = __import__("safetensors.numpy").numpy.load(data)
    meta = {k: v for k, v in read_header(data)[1].items() if k not in ("schema", "version")}
    with pytest.raises(ArtifactError, match="identified for robot 'arm2'.*URDF differs"):
        PhysicsModel.from_bytes(
            encode(PhysicsModel.SCHEMA, tensors, dict(meta, urdf_sha256="0" * 64))
        )
    arm7 = dict(meta, config=dict(meta["config"], robot="arm7"))
    with pytest.raises(ArtifactError, match="robot 'arm7' has joints"):
        PhysicsModel.from_bytes(encode(PhysicsModel.SCHEMA, tensors, arm7))
    with pytest.raises(ArtifactError, match="outside their bounds"):
        PhysicsModel.from_bytes(
            encode(PhysicsModel.SCHEMA, dict(tensors, params=-tensors["params"]), meta)
        )


def test_bad_input():
    data = arm_dataset("arm2", episodes=1, steps=20, seed=1)
    with pytest.raises(ModelError, match="robot 'arm7' has joints"):
        PhysicsModel(ModelSignature.of(data), config=PhysicsConfig(robot="arm7"))
    lin = linear_dataset()
    with pytest.raises(ModelError, match="cannot build robot 'nope'"):
        PhysicsModel(ModelSignature.of(lin), config=PhysicsConfig(robot="nope"))
    with pytest.raises(ModelError, match="not a whole multiple"):
        PhysicsModel(
            ModelSignature(data.joint_names, data.state_names, 0.005),
            config=PhysicsConfig(robot="arm2", physics_timestep=0.002),
        )
    with pytest.raises(ModelError, match="positions and velocities only"):
        PhysicsModel(
            ModelSignature(data.joint_names, data.state_names + ("ee/x",), data.dt),
            config=PhysicsConfig(robot="arm2"),
        )
    with pytest.raises(ModelError, match="subset of"):
        PhysicsConfig(identify=("gravity",))
    model = PhysicsModel(ModelSignature.of(data), config=PhysicsConfig(robot="arm2"))
    with pytest.raises(ModelError, match="not fitted"):
        model.predict(torch.zeros(4), torch.zeros(2))
    with pytest.raises(ModelError, match="at least 10 transitions, the dataset has 5"):
        model.fit(data.select(np.arange(5)))


def test_warm_start_continues_from_identified_parameters(perturbed):
    model, _, val = perturbed
    before = dict(model.params)
    report = model.fit(val, warm_start=True)
    assert not report.rolled_back
    assert report.train_loss[0] < 1e-5  # starts where the last fit ended
    for name, value in before.items():
        if name not in ("mass_scale/link1", "armature/joint1"):  # see above
            assert model.params[name] == pytest.approx(value, rel=0.03)
    np.testing.assert_allclose(
        inertia_matrices(model.sim.model), inertia_matrices(true_model()), rtol=0.01, atol=1e-6
    )
