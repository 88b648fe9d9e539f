"""Network policies (pure core): gradients through imagined rollouts against finite differences,
BPTT lowering the imagined cost, divergence handling, the policy artifact and its refusals,
distillation with DAgger on the 2-link sim arm."""

import numpy as np
import pytest
import torch
from planning_models import LinearModel, NaNModel, TwoLinkArm

from mbrl_ros.common import artifacts
from mbrl_ros.common.artifacts import ArtifactError
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.control.random_torque import RandomTorquePolicy
from mbrl_ros.control.scripted import default_gains, hold_controller
from mbrl_ros.data.dataset import NormStats
from mbrl_ros.dynamics.ensemble import EnsembleConfig, EnsembleModel
from mbrl_ros.planning import ILQR
from mbrl_ros.planning.mpc import MPC
from mbrl_ros.policy.bptt import (
    BPTTConfig,
    V2Config,
    imagine,
    imagined_cost,
    reach_costs,
    run_v2,
    train_bptt,
)
from mbrl_ros.policy.distill import ControllerExpert, DistillConfig, MPCExpert, distill
from mbrl_ros.policy.errors import PolicyError
from mbrl_ros.policy.network import POLICY_SCHEMA, GoalPolicy, PolicySignature
from mbrl_ros.policy.rollout import final_distance, run_episode
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.episodes import TargetSampler
from mbrl_ros.tasks.reach import ReachCost

ROBOT = load_robot("arm2")
DT = 0.05
SIG = PolicySignature.for_joints("arm2", ROBOT.joint_names, DT)
BOX = (np.array([-0.27, -0.27, 0.0]), np.array([0.27, 0.27, 0.15]))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def policy(hidden=(16, 16), seed=0, activation="tanh"):
    p = GoalPolicy(SIG, ROBOT.limits.effort, hidden, activation, seed=seed)
    rng = np.random.default_rng(seed)
    p.set_normalisation(
        np.c_[rng.uniform(-1, 1, (50, 2)), rng.normal(0, 1, (50, 2))],
        rng.uniform(-0.2, 0.2, (20, 3)),
    )
    with torch.no_grad():  # a last layer of ordinary size, so the torques depend on the inputs
        p.layers[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
    return p


def starts_and_targets(n, seed=0):
    rng = np.random.default_rng(seed)
    sampler = TargetSampler(ROBOT, BOX, seed)
    x0 = np.c_[rng.uniform(-0.5, 0.5, (n, 2)), rng.normal(0, 0.5, (n, 2))]
    return x0, np.stack([sampler.sample() for _ in range(n)])


def rollout_loss(p, model, x0, g, horizon, members=None):
    cost = ReachCost(ROBOT)
    x0, g = torch.as_tensor(x0), torch.as_tensor(g)
    states, actions = imagine(p, model, x0, g, horizon, members)
    return reach_costs(cost, states, actions, g).mean()


def directional_check(p, loss_fn, eps, seed=0, directions=3):
    """(autograd directional derivatives, central differences) along random directions."""
    params = list(p.parameters())
    grads = torch.autograd.grad(loss_fn(), params)
    gen = torch.Generator().manual_seed(seed)
    exact, numeric = [], []
    for _ in range(directions):
        dirs = [torch.randn(q.shape, generator=gen, dtype=q.dtype) for q in params]
        exact.append(sum(float((g * d).sum()) for g, d in zip(grads, dirs)))
        with torch.no_grad():
            values = []
            for sign in (1, -1):
                for q, d in zip(params, dirs):
                    q += sign * eps * d
                values.append(float(loss_fn()))
                for q, d in zip(params, dirs):
                    q -= sign * eps * d
        numeric.append((values[0] - values[1]) / (2 * eps))
    return np.array(exact), np.array(numeric)


# -- gradients ---------------------------------------------------------------------------------
def test_policy_gradient_through_the_model_rollout_matches_finite_differences_in_float64():
    """Exact differentiable model of the 2-link arm, float64 throughout: the BPTT gradient of
    the reach cost of 8-step rollouts agrees with central differences to 1e-6."""
    p = policy()
    x0, g = starts_and_targets(4)
    model = TwoLinkArm(dt=DT, substeps=2)
    exact, numeric = directional_check(p, lambda: rollout_loss(p, model, x0, g, 8), 1e-6)
    assert np.all(np.abs(exact) > 1e-3)
    np.testing.assert_allclose(exact, numeric, rtol=1e-6)


def ensemble(seed=0):
    """An (untrained, randomly initialised) 3-member ensemble for arm2's states."""
    stats = NormStats(
        np.zeros(4),
        np.array([1.0, 1.0, 3.0, 3.0]),
        np.zeros(2),
        ROBOT.limits.effort,
        np.zeros(4),
        np.array([0.05, 0.05, 0.5, 0.5]),
    )
    model = EnsembleModel(
        TwoLinkArm(dt=DT).signature,
        stats,
        "cpu",
        EnsembleConfig(members=3, hidden=16, layers=2, seed=seed),
    )
    return model


@pytest.mark.parametrize("members", [None, torch.tensor([0, 2, 1, 2])])
def test_policy_gradient_through_the_ensemble_matches_finite_differences(members):
    """Through the ensemble (its mean, or one member per rollout): the ensemble computes in
    float32, so central differences with a larger step agree to 1e-3 (the float64 check of the
    same code path is the test above)."""
    p = policy()
    x0, g = starts_and_targets(4)
    model = ensemble()
    exact, numeric = directional_check(p, lambda: rollout_loss(p, model, x0, g, 6, members), 1e-3)
    np.testing.assert_allclose(exact, numeric, rtol=1e-3)


# -- BPTT ----------------------------------------------------------------------------------------
def test_horizon_schedule_grows_in_stages():
    c = BPTTConfig(iterations=8, horizon_start=5, horizon_end=20, horizon_stages=4)
    assert [c.horizon(i) for i in range(8)] == [5, 5, 10, 10, 15, 15, 20, 20]
    assert BPTTConfig(horizon_stages=1, horizon_end=30).horizon(0) == 30


def test_bptt_lowers_the_imagined_cost():
    """60 Adam steps of BPTT through the exact 2-link model (horizons 5, 10, 15): the imagined
    reach cost of held-aside rollouts falls, and their final distance to the target shrinks
    (27 cm → 13 cm on this machine)."""
    p = policy((32, 32))
    x0, g = starts_and_targets(160, seed=1)
    model = TwoLinkArm(dt=DT, substeps=2)
    cost = ReachCost(ROBOT)
    x_eval, g_eval = x0[128:], g[128:]

    def final_distance_imagined():
        with torch.no_grad():
            states, _ = imagine(p, model, torch.as_tensor(x_eval), torch.as_tensor(g_eval), 15)
        return float((cost.ee(states[:, -1]) - torch.as_tensor(g_eval)).norm(dim=-1).mean())

    before = imagined_cost(p, model, cost, x_eval, g_eval, 15), final_distance_imagined()
    report = train_bptt(
        p,
        model,
        cost,
        x0[:128],
        g[:128],
        BPTTConfig(
            iterations=60, batch=32, horizon_start=5, horizon_end=15, horizon_stages=3, lr=3e-3
        ),
    )
    after = imagined_cost(p, model, cost, x_eval, g_eval, 15), final_distance_imagined()
    assert not report.diverged and len(report.losses) == 60
    assert report.horizons[0] == 5 and report.horizons[-1] == 15
    assert after[0] < before[0] - 20, (before, after)
    assert after[1] < 0.6 * before[1], (before, after)


def test_divergence_is_reported_and_the_last_good_parameters_kept():
    p = policy()
    x0, g = starts_and_targets(16)
    train_bptt(
        p,
        LinearModel.double_integrator(dt=DT),
        ReachCost(ROBOT),
        x0,
        g,
        BPTTConfig(iterations=5, batch=8, horizon_start=3, horizon_end=3),
    )
    good = {k: v.clone() for k, v in p.state_dict().items()}
    report = train_bptt(
        p,
        NaNModel(),
        ReachCost(ROBOT),
        x0,
        g,
        BPTTConfig(iterations=5, batch=8, horizon_start=3, horizon_end=3),
    )
    assert report.diverged and "non-finite loss at iteration 1" in report.message
    assert not report.losses
    for k, v in p.state_dict().items():
        assert torch.equal(v, good[k]), k


def test_bad_bptt_input_is_refused():
    p = policy()
    x0, g = starts_and_targets(4)
    with pytest.raises(PolicyError, match="control period"):
        train_bptt(p, TwoLinkArm(dt=0.02), ReachCost(ROBOT), x0, g)
    with pytest.raises(PolicyError, match="needs an ensemble"):
        train_bptt(p, TwoLinkArm(dt=DT), ReachCost(ROBOT), x0, g, BPTTConfig(propagation="member"))
    with pytest.raises(PolicyError, match="starts must be"):
        train_bptt(p, TwoLinkArm(dt=DT), ReachCost(ROBOT), x0[:, :3], g)
    with pytest.raises(PolicyError, match="horizon_end"):
        BPTTConfig(horizon_start=10, horizon_end=5)


def test_v2_loop_runs_the_policy_appends_its_data_and_refits():
    """Two short passes of the v2.0 loop on the sim arm with a small ensemble: D grows by each
    pass's episodes (π0's first), the model is refitted on it, BPTT runs through it, and each
    pass's policy is the one that ran."""
    sim = ArmSimulator(
        ROBOT, SimConfig(control_period=DT, scene=None, initial_position_noise=0.3, seed=0)
    )
    model = EnsembleModel(
        TwoLinkArm(dt=DT).signature,
        None,
        "cpu",
        EnsembleConfig(members=2, hidden=16, layers=1, max_epochs=5, seed=0),
    )
    p = GoalPolicy(SIG, ROBOT.limits.effort, (16,), seed=0)
    config = V2Config(
        iterations=2,
        episodes=2,
        episode_steps=20,
        random_episodes=4,
        imagined_targets=16,
        bptt=BPTTConfig(iterations=4, batch=8, horizon_start=2, horizon_end=4),
    )
    data, records = run_v2(p, model, ReachCost(ROBOT), sim, TargetSampler(ROBOT, BOX, 1), config)
    assert len(data) == (4 + 2 * 2) * 20 and data.n_episodes == 8
    assert data.sources == ("pi0", "policy")
    assert [r.transitions for r in records] == [120, 160]
    assert [r.robot_seconds for r in records] == pytest.approx([6.0, 8.0])
    for r in records:
        assert r.fit.train_loss and len(r.bptt.losses) == 4 and len(r.final_distances) == 2
    x, g = np.zeros(4), np.array([0.1, 0.1, 0.07])
    assert not np.array_equal(
        records[0].policy.act(x[:2], x[2:], g), records[1].policy.act(x[:2], x[2:], g)
    )
    np.testing.assert_array_equal(
        records[1].policy.act(x[:2], x[2:], g), p.frozen().act(x[:2], x[2:], g)
    )


# -- the artifact ----------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["tanh", "silu"])
def test_artifact_round_trip_and_the_numpy_forward(activation):
    p = policy((8, 12, 6), seed=3, activation=activation)
    p.info = {"method": "test"}
    q = GoalPolicy.from_bytes(p.to_bytes())
    assert q.signature == SIG and q.hidden == (8, 12, 6) and q.info == {"method": "test"}
    x, g = starts_and_targets(10, seed=2)
    x, g = torch.as_tensor(x), torch.as_tensor(g)
    with torch.no_grad():
        assert torch.equal(p(x, g), q(x, g))
        u = q(x, g).numpy()
    assert np.all(np.abs(u) <= ROBOT.limits.effort)
    frozen = q.frozen()
    numpy_u = np.stack([frozen.act(xi[:2], xi[2:], gi) for xi, gi in zip(x.numpy(), g.numpy())])
    np.testing.assert_allclose(numpy_u, u, rtol=0, atol=1e-12)


def test_a_policy_for_another_robot_or_layout_is_refused():
    sig = PolicySignature.for_joints("arm2", ROBOT.joint_names, DT)
    sig.check("arm2", ROBOT.joint_names, DT)
    with pytest.raises(PolicyError, match="robot 'arm2', not 'arm7'"):
        sig.check("arm7", ROBOT.joint_names)
    with pytest.raises(PolicyError, match="in that order"):
        sig.check("arm2", ROBOT.joint_names[::-1])
    with pytest.raises(PolicyError, match="control period of 0.05 s, not 0.01 s"):
        sig.check("arm2", ROBOT.joint_names, 0.01)
    with pytest.raises(PolicyError, match="positions then velocities"):
        GoalPolicy(
            PolicySignature("arm2", ROBOT.joint_names, ("position/joint1",) * 4, DT),
            ROBOT.limits.effort,
        )


def _tampered(**changes):
    """A valid arm2 policy's tensors and metadata with ``changes`` applied, encoded."""
    p = policy()
    tensors, meta = artifacts.decode(p.to_bytes(), POLICY_SCHEMA)
    for key in ("schema", "version"):
        meta.pop(key)
    for key, value in changes.items():
        if key in tensors or key.startswith("net/"):
            tensors[key] = value
        else:
            meta[key] = value
    tensors = {k: v for k, v in tensors.items() if v is not None}
    return artifacts.encode(POLICY_SCHEMA, tensors, meta)


@pytest.mark.parametrize(
    "data, words",
    [
        (lambda: b"garbage bytes", "too short|header"),
        (
            lambda: LinearGaussianController.open_loop(
                np.zeros((3, 2)), 4, dt_ns=50_000_000
            ).to_bytes(),
            "schema is 'mbrl_ros/lg_controller', expected 'mbrl_ros/policy'",
        ),
        (
            lambda: _tampered(state_names=["position/joint1", "position/joint2", "ee/x", "ee/y"]),
            "observation layout",
        ),
        (lambda: _tampered(hidden=[16, 17]), "do not match hidden sizes"),
        (lambda: _tampered(**{"net/2/bias": None}), "do not match hidden sizes"),
        (lambda: _tampered(**{"net/9/weight": np.zeros((2, 2))}), "unknown"),
        (lambda: _tampered(activation="relu"), "activation 'relu'"),
        (lambda: _tampered(dt=-1.0), "'dt'"),
        (lambda: _tampered(**{"norm/state_std": np.zeros(4)}), "must be positive"),
        (lambda: _tampered(effort=np.ones(3)), "must match 'effort'"),
    ],
)
def test_invalid_policy_artifacts_are_rejected_with_a_clear_error(data, words):
    with pytest.raises(ArtifactError, match=words):
        GoalPolicy.from_bytes(data())


# -- distillation ---------------------------------------------------------------------------------
def test_controller_expert_labels_with_the_mean_action():
    rng = np.random.default_rng(0)
    c = LinearGaussianController.feedback(
        rng.normal(size=(5, 4)),
        rng.normal(size=(5, 2)),
        rng.normal(size=(5, 2, 4)),
        dt_ns=50_000_000,
    )
    target = np.array([0.1, 0.2, 0.07])
    expert = ControllerExpert([(target, c)])
    expert.start(target)
    x = rng.normal(size=4)
    np.testing.assert_array_equal(expert.label(x, 2), c.act(x, 2))
    np.testing.assert_array_equal(expert.label(x, 9), c.act(x, 4))  # past the end: last step
    with pytest.raises(PolicyError, match="no controller for target"):
        expert.start(target + 0.01)


def test_dagger_reduces_the_imitation_error_on_the_policys_own_states():
    """Expert: PD controllers towards joint goals whose end effectors are the targets (a
    deterministic ControllerExpert). After behaviour cloning the policy meets states the expert
    never visited; three DAgger iterations of relabelling them cut the imitation error on the
    states the policy visits itself (0.054 → 0.006 of the effort limits on this machine)."""
    fk = ForwardKinematics(ROBOT)
    kp, kd = default_gains(ROBOT, ROBOT.joint_names, DT)
    pairs = [
        (
            fk.ee_position(torch.tensor(q)).numpy(),
            hold_controller(
                ROBOT.joint_names, q, kp, kd, ROBOT.limits.effort, T=1, dt_ns=50_000_000
            ),
        )
        for q in ([1.0, 1.2], [-0.8, 1.5], [0.5, -1.0], [-1.5, -0.7])
    ]
    sim = ArmSimulator(
        ROBOT, SimConfig(control_period=DT, scene=None, initial_position_noise=0.5, seed=0)
    )
    p = GoalPolicy(SIG, ROBOT.limits.effort, (32, 32), seed=0)
    records = distill(
        p,
        ControllerExpert(pairs),
        sim,
        [(None, g) for g, _ in pairs],
        DistillConfig(dagger_iterations=3, episode_steps=30, train_steps=600, batch=128, lr=3e-3),
    )
    assert [r.pairs for r in records] == [120, 240, 360, 480] and not records[-1].message
    assert records[-1].imitation_error < 0.5 * records[1].imitation_error, [
        r.imitation_error for r in records
    ]


@pytest.mark.slow
def test_a_policy_distilled_from_mpc_reaches_like_the_mpc():
    """An iLQR MPC through the analytic 2-link model drives the MuJoCo arm towards two targets;
    the policy cloned from it and trained with three DAgger iterations reaches both within 2 cm
    (0.7 and 0.2 cm on this machine)."""
    effort = ROBOT.limits.effort
    mpc = MPC(
        ROBOT,
        ROBOT.joint_names,
        ILQR(10, -effort, effort, iterations=2),
        ReachCost(ROBOT),
        dt=DT,
        replan_every=1,
        random_steps=0,
        base_policy=RandomTorquePolicy(effort, seed=0),
    )
    mpc.set_model(TwoLinkArm(dt=DT, substeps=5))
    fk = ForwardKinematics(ROBOT)
    targets = [fk.ee_position(torch.tensor(q)).numpy() for q in ([1.0, 1.2], [-0.8, 1.5])]
    conditions = [(np.zeros(2), targets[0]), (np.array([0.3, -0.3]), targets[1])]
    sim = ArmSimulator(ROBOT, SimConfig(control_period=DT, scene=None))
    p = GoalPolicy(SIG, effort, (32, 32), seed=0)
    records = distill(
        p,
        MPCExpert(mpc),
        sim,
        conditions,
        DistillConfig(dagger_iterations=3, episode_steps=30, train_steps=1000, batch=128, lr=3e-3),
    )
    assert max(records[0].final_distances) < 0.02  # the MPC gets there
    frozen = p.frozen()
    for start, target in conditions:
        episode = run_episode(sim, lambda x, t: frozen.act(x[:2], x[2:], target), target, 30, start)
        assert final_distance(fk, episode) < 0.02


def test_mpc_expert_needs_a_model_and_plans_from_the_first_step():
    effort = ROBOT.limits.effort
    mpc = MPC(
        ROBOT,
        ROBOT.joint_names,
        ILQR(5, -effort, effort),
        ReachCost(ROBOT),
        dt=DT,
        replan_every=1,
        random_steps=0,
        base_policy=RandomTorquePolicy(effort, seed=0),
    )
    with pytest.raises(PolicyError, match="needs a dynamics model"):
        MPCExpert(mpc)
    mpc.set_model(TwoLinkArm(dt=DT))
    mpc.random_steps = 3
    with pytest.raises(PolicyError, match="random_steps"):
        MPCExpert(mpc)
