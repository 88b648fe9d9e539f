"""The GPS loop (trajopt.gps) offline on the 2-link sim arm: learns to reach a target within 2 cm,
and bad samples leave the controller unchanged."""

import numpy as np
import pytest
import torch

from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.reach import ReachCost
from mbrl_ros.trajopt.gps import GPS, GPSConfig, initial_controllers, rollout, run_offline
from mbrl_ros.trajopt.kl_update import KLUpdateError
from mbrl_ros.trajopt.local_dynamics import FitError

STARTS = [np.array([0.3, 0.5]), np.array([-0.5, 1.0])]
T = 50


# the trust region these tests were tuned with (the trainer node's defaults are 0.3 and 3.0)
TRUST = {"kl_step": 0.5, "max_step_mult": 10.0}


def setup(prior="gmm", **config):
    robot = load_robot("arm2")
    sim = ArmSimulator(robot, SimConfig(scene=None))
    target = ForwardKinematics(robot).ee_position(torch.tensor([0.8, 1.2])).numpy()
    cost = ReachCost(
        robot,
        target,
        w_l2=100.0,
        w_log=1.0,
        alpha=1e-5,
        terminal_weight=10.0,
        w_action=1e-3,
        w_limit=1.0,
    )

    def final_distance(X):
        with torch.no_grad():
            return cost.distance2(torch.as_tensor(X))[..., -1].sqrt().numpy()

    gps = GPS(
        cost,
        initial_controllers(sim, STARTS, T),
        GPSConfig(**(TRUST | {"prior": prior} | config)),
        final_distance,
    )
    return sim, gps


def test_gps_reaches_within_two_centimetres_with_the_gmm_prior():
    sim, gps = setup()
    records = run_offline(gps, sim, STARTS, iterations=8, samples=5, seed=1)
    assert [r.samples_used for r in records][-1] == 8 * 2 * 5
    for m in range(2):
        curve = [r.final_metric for r in records if r.condition == m]
        assert curve[0] > 0.1  # starts 20–30 cm away
        assert min(curve[-3:]) < 0.02  # within 2 cm in ≤ 8 iterations × 5 samples
        kl = [(r.kl, r.epsilon) for r in records if r.condition == m]
        assert all(abs(k - e) <= 0.1 * e for k, e in kl)


def test_rollout_applies_the_controller_and_records_clamped_torques():
    sim, gps = setup()
    ctrl = gps.controller(0)
    z = np.full((T, 2), 100.0)  # far beyond the effort limits
    X, U = rollout(sim, ctrl, STARTS[0], z)
    assert X.shape == (T + 1, 4) and U.shape == (T, 2)
    np.testing.assert_allclose(X[0], np.r_[STARTS[0], 0, 0])
    np.testing.assert_allclose(np.abs(U), np.broadcast_to(sim.robot.limits.effort, U.shape))


def test_failed_updates_keep_the_controller():
    sim, gps = setup(prior="none", eta_max=1e-6, eta_min=1e-9)
    before = gps.controller(0)
    X, U = rollout(sim, before, STARTS[0], np.zeros((T, 2)))
    with pytest.raises(FitError, match="too few for the regression"):
        gps.update(0, X[None], U[None])
    runs = [
        rollout(sim, before, STARTS[0], np.random.default_rng(i).standard_normal((T, 2)))
        for i in range(3)
    ]
    with pytest.raises(KLUpdateError, match="η reached its bound"):
        gps.update(0, np.stack([r[0] for r in runs]), np.stack([r[1] for r in runs]))
    assert gps.controller(0) is before and gps.samples_used == 0


def test_ilqr_on_a_known_model_gives_the_initial_controller():
    """iLQR on the analytic 2-link model (planning test model) from each start, with exploration
    noise added, starts GPS close to the target; the loop then keeps it there. The plan uses a
    smooth version of the task cost (no log term): the log term's curvature near the target
    gives gains far beyond the effort limits, whose saturated closed loop no local linear model
    can hold (the update then stops with η at its bound)."""
    from planning_models import TwoLinkArm

    from mbrl_ros.planning import ILQR
    from mbrl_ros.trajopt.gps import with_exploration

    sim, hold = setup()
    effort = sim.robot.limits.effort
    planner = ILQR(T, -effort, effort, iterations=20, dtype=torch.float64)
    model = TwoLinkArm(dt=0.01, substeps=5)
    smooth = ReachCost(
        sim.robot,
        hold.cost.target.numpy(),
        w_l2=100.0,
        w_log=0.0,
        terminal_weight=10.0,
        w_action=1e-2,
    )
    plans = [planner.plan(np.r_[q, 0.0, 0.0], model, smooth).controller for q in STARTS]
    gps = GPS(
        hold.cost,
        [with_exploration(p, 0.02 * effort) for p in plans],
        GPSConfig(prior="gmm", **TRUST),
        hold.metric,
    )
    records = run_offline(gps, sim, STARTS, iterations=3, samples=5, seed=1)
    first = [r.final_metric for r in records[:2]]
    assert max(first) < 0.05  # the plan alone gets within 5 cm
    assert max(r.final_metric for r in records[-2:]) < 0.02


def test_fit_dynamics_takes_the_initial_state_prior_from_recent_samples():
    """With the GMM prior, x_0's covariance is the MAP estimate under GPS's prior from the first
    states of the condition's recent samples (both batches here), not the batch's own."""
    from mbrl_ros.trajopt.local_dynamics import initial_state, initial_state_prior

    _, gps = setup()
    rng = np.random.default_rng(3)
    batches = [
        (rng.standard_normal((5, T + 1, 4)) * (1.0 + i), rng.standard_normal((5, T, 2)))
        for i in range(2)
    ]
    for X, U in batches:
        dyn = gps.fit_dynamics(0, X, U)
    prior = initial_state_prior(np.concatenate([b[0][:, 0] for b in batches]), 1.0)
    np.testing.assert_allclose(dyn.x0_cov, initial_state(X, 1e-6, prior)[1], rtol=1e-12)
    assert np.abs(dyn.x0_cov - initial_state(X, 1e-6)[1]).max() > 0.1


def test_regularization_mode_reaches_the_fit():
    from mbrl_ros.trajopt.local_dynamics import fit_linear_regression

    with pytest.raises(ValueError, match="'regularization_mode' = 'ridge' must be one of"):
        GPSConfig(regularization_mode="ridge")
    _, gps = setup(prior="none", regularization=0.1, regularization_mode="block")
    rng = np.random.default_rng(4)
    X, U = rng.standard_normal((8, T + 1, 4)), rng.standard_normal((8, T, 2))
    np.testing.assert_array_equal(
        gps.fit_dynamics(0, X, U).Fx,
        fit_linear_regression(X, U, 0.1, regularization_mode="block").Fx,
    )
    assert np.abs(gps.fit_dynamics(0, X, U).Fx - fit_linear_regression(X, U, 0.1).Fx).max() > 1e-3


def test_an_eta_search_that_runs_out_still_updates_and_says_so():
    """One η iteration from η0 = 1000 stays far inside the trust region: the update warns, keeps
    that controller and records that the search did not meet ε."""
    from mbrl_ros.trajopt.kl_update import KLSearchWarning

    sim, gps = setup(prior="none", eta0=1e3, eta_iterations=1)
    before = gps.controller(0)
    runs = [
        rollout(sim, before, STARTS[0], np.random.default_rng(i).standard_normal((T, 2)))
        for i in range(3)
    ]
    with pytest.warns(KLSearchWarning, match="using η = 1000 with KL"):
        rec = gps.update(0, np.stack([r[0] for r in runs]), np.stack([r[1] for r in runs]))
    assert not rec.kl_converged and rec.eta == 1e3 and rec.kl < rec.epsilon
    assert gps.controller(0) is not before and gps.samples_used == 3
