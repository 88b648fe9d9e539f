"""Planner speed and quality at PETS scale on the 7-DOF arm, against a plain matmul measured in the
same run.

Model: ``EnsembleModel`` with 5 members of 3×200 (SiLU, Gaussian heads), fitted for
``--fit-seconds`` to 10 000 random-torque transitions of the simulated arm7 (0 s: random
weights with the data's normalisation; speed is the same, costs then mean little). Task:
``ReachCost`` to a reachable end-effector target. All planning in float32 with ``--threads``
torch threads.

1. A plain float32 matmul (n = 2048) and the ensemble's own batched layer (5 × 400×200·200×200):
   FLOP/s, best of several.
2. Each planner at PETS scale (population 400, horizon 20, 5 iterations, TS∞ with one particle
   per member; random shooting with 2000 samples; iLQR 5 iterations on the mean): latency (median
   of ``--repeats``), model transitions/s, and for the sampling planners the fraction of the
   matmul FLOP/s their network FLOPs reach. The floor for a CEM plan is its FLOPs over the
   matmul FLOP/s; the goal is a CEM plan within 1.5× of it.
3. iCEM against CEM at equal compute (the same number of model transitions per plan), cost of
   the mean prediction of the returned plan, over several start states.
4. Receding-horizon replanning on the simulated arm (MuJoCo) in real-time emulation: while a plan
   is computed, the previous controller (with its feedback K_t) keeps running, as the executor
   does; each plan starts one expected latency ahead, from the state the model predicts there
   (``planning.predict_ahead``). For an iCEM and two iLQR
   configurations with warm starts, torques within the training data's range: replan latency,
   rate, and the end-effector distance to the target.

``--clock cpu`` times with this process's CPU time instead of the wall clock: with
``--threads 1`` these are the figures of an idle machine even on a loaded one.

    python benchmarks/bench_planners.py [--threads N] [--clock wall|cpu] [--fit-seconds S]
                                        [--repeats R] [--starts N] [--loop-seconds S]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.ensemble import EnsembleConfig, EnsembleModel
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.planning import CEM, ICEM, ILQR, MPPI, RandomShooting, predict_ahead
from mbrl_ros.robot import ForwardKinematics, load_robot
from mbrl_ros.simulation import ArmSimulator, SimConfig, home_position
from mbrl_ros.tasks import ReachCost

MEMBERS, HIDDEN, LAYERS = 5, 200, 3
DATA_SCALE = 0.3  # random torques of the training data: ± this fraction of the effort limits
POP, HORIZON, ITERS = 400, 20, 5


CLOCK = time.perf_counter  # or time.process_time (--clock cpu)


def best_rate(fn, flops: float, seconds: float) -> float:
    """FLOP/s of the fastest call of ``fn`` within ``seconds`` (wall), timed with CLOCK."""
    fn()
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < seconds or best == math.inf:
        t = CLOCK()
        fn()
        elapsed = CLOCK() - t
        if elapsed > 0:
            best = min(best, elapsed)
    return flops / best


def matmul_flops(n: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return best_rate(lambda: a @ b, 2 * n ** 3, seconds)


def layer_flops(seconds: float = 1.0) -> float:
    x, w, b = torch.randn(MEMBERS, POP, HIDDEN), torch.randn(MEMBERS, HIDDEN, HIDDEN), \
        torch.zeros(MEMBERS, 1, HIDDEN)
    return best_rate(lambda: torch.baddbmm(b, x, w), 2 * MEMBERS * POP * HIDDEN * HIDDEN,
                     seconds)


def flops_per_transition(dx: int, du: int) -> int:
    """Multiply-adds ×2 of one member's network for one (s, a): in → 200 → 200 → 200 → 2·dx."""
    sizes = [dx + du] + [HIDDEN] * LAYERS + [2 * dx]
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def make_model(robot, fit_seconds: float):
    data = random_torque_dataset(robot, episodes=100, steps=100, seed=0, scale=DATA_SCALE)
    config = EnsembleConfig(members=MEMBERS, hidden=HIDDEN, layers=LAYERS,
                            max_seconds=max(fit_seconds, 1.0), max_epochs=1000, seed=0)
    model = EnsembleModel(ModelSignature.of(data), device="cpu", config=config)
    if fit_seconds > 0:
        train, val = data.split(0.2, seed=0)
        report = model.fit(train, val)
        print(f"model: fitted {report.seconds:.0f} s on {len(train)} transitions, "
              f"validation loss {report.val_loss[-1] if report.val_loss else float('nan'):.4g}")
    else:
        model.stats = data.stats()
        print("model: random weights with the data's normalisation (costs are not meaningful)")
    return model


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = CLOCK()
        out = fn()
        times.append(CLOCK() - t)
    return float(np.median(times)), out


def equal_compute_icem_population(cem_transitions_per_particle: int, elites: int) -> int:
    """iCEM population N whose decaying schedule evaluates about as many sequences as CEM."""
    best = POP
    for n in range(POP, 4 * POP):
        planner = ICEM(HORIZON, -np.ones(1), np.ones(1), population=n, elites=elites,
                       iterations=ITERS)
        total = sum(planner.population_size(i) for i in range(ITERS)) + ITERS - 1 + 2
        if total * HORIZON > cem_transitions_per_particle:
            break
        best = n
    return best


def closed_loop(robot, model, cost, planner, x_start, seconds: float, dt: float):
    """Real-time emulation on MuJoCo; returns latencies (s) and the end-effector distance to
    the target (m) after every control period. Each plan starts one expected latency (the last
    one's) ahead, from the state the model predicts there under the running controller."""
    sim = ArmSimulator(robot, SimConfig(control_period=dt, seed=1,
                                        initial_position=tuple(x_start[:7])))
    sim.reset()
    dt_ns = int(round(dt * 1e9))
    effort = robot.limits.effort
    fk = ForwardKinematics(robot)
    target = cost.target.double().numpy()
    controller, latencies, distances, step = None, [], [], 0
    steps = int(round(seconds / dt))
    m = sim.measure()
    x = np.concatenate([m.position, m.velocity])
    lead = 1
    while step < steps:
        stamp, start = step * dt_ns, (step + lead) * dt_ns
        t = CLOCK()
        x_plan = predict_ahead(model, x, stamp, start, controller, planner.action_low,
                               planner.action_high)
        result = planner.plan(x_plan, model, cost, warm=controller, start_ns=start)
        latency = CLOCK() - t
        latencies.append(latency)
        # The running controller acts until the new plan is ready and has started.
        for _ in range(max(lead, math.ceil(latency / dt))):
            i = None if controller is None else controller.index(step * dt_ns)
            u = np.zeros(7) if i is None else np.clip(controller.act(x, i), -effort, effort)
            sim.step(u)
            m = sim.measure()
            x = np.concatenate([m.position, m.velocity])
            step += 1
            ee = fk.ee_position(torch.as_tensor(x[:7])).numpy()
            distances.append(float(np.linalg.norm(ee - target)))
        if result.ok:
            controller = result.controller
        lead = max(1, math.ceil(latency / dt))
    return np.array(latencies), np.array(distances)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time with the wall clock, or with this process's CPU time (with "
                             "--threads 1: the figures of an idle machine on a loaded one)")
    parser.add_argument("--fit-seconds", type=float, default=60.0,
                        help="training time of the ensemble (0: random weights)")
    parser.add_argument("--repeats", type=int, default=3, help="plans per planner (median)")
    parser.add_argument("--starts", type=int, default=5, help="start states for iCEM vs CEM")
    parser.add_argument("--loop-seconds", type=float, default=2.0,
                        help="simulated seconds of each closed-loop run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    robot = load_robot("arm7")
    model = make_model(robot, args.fit_seconds)
    effort = robot.limits.effort
    home = home_position(robot)
    target = ForwardKinematics(robot).ee_position(
        torch.as_tensor(home + np.array([0.4, 0.3, 0.0, 0.3, 0.0, 0.2, 0.0]))).numpy()
    cost = ReachCost(robot, target).to(torch.float32)
    x0 = np.concatenate([home, np.zeros(7)])
    fpt = flops_per_transition(model.dx, model.du)

    mm = matmul_flops()
    lf = layer_flops()
    print(f"threads: {torch.get_num_threads()}, clock: {args.clock}; "
          f"plain matmul (2048², float32): "
          f"{mm / 1e9:.1f} GFLOP/s; ensemble layer (5×400×200·200×200): {lf / 1e9:.1f} GFLOP/s "
          f"({lf / mm:.2f}× matmul)")
    cem_flops = POP * HORIZON * ITERS * MEMBERS * fpt
    print(f"PETS-scale CEM plan: {cem_flops / 1e9:.1f} GFLOP of network → floor "
          f"{cem_flops / mm * 1e3:.0f} ms at this matmul rate; goal ≤ 1.5× floor. The matmul is "
          f"measured again right before each planner and its ratios use that figure.\n")

    common = dict(mode="tsinf", particles=MEMBERS, seed=0)
    planners = {
        "random shooting (2000 samples)": RandomShooting(HORIZON, -effort, effort,
                                                         samples=POP * ITERS, **common),
        "CEM": CEM(HORIZON, -effort, effort, population=POP, elites=40, iterations=ITERS,
                   **common),
        "iCEM": ICEM(HORIZON, -effort, effort, population=POP, elites=40, iterations=ITERS,
                     **common),
        "MPPI": MPPI(HORIZON, -effort, effort, samples=POP, iterations=ITERS, temperature=1.0,
                     **common),
        "iLQR (5 iterations, mean)": ILQR(HORIZON, -effort, effort, iterations=ITERS,
                                          tolerance=0.0),
    }
    print(f"{'planner':32s} {'latency ms':>10s} {'transitions/s':>14s} {'GFLOP/s':>8s} "
          f"{'matmul':>7s} {'× matmul':>9s} {'× floor':>8s} {'cost':>9s}")
    for name, planner in planners.items():
        planner.plan(x0, model, cost)  # warm-up
        mm = matmul_flops(seconds=1.0)
        latency, result = median_time(lambda: planner.plan(x0, model, cost), args.repeats)
        transitions = result.stats["transitions"]
        if name.startswith("iLQR"):  # Jacobians and line search: not the shooting FLOP model
            extra = f"{'—':>8s} {mm / 1e9:7.1f} {'—':>9s} {'—':>8s}"
        else:
            rate = transitions * fpt / latency
            extra = (f"{rate / 1e9:8.1f} {mm / 1e9:7.1f} {rate / mm:9.2f} "
                     f"{latency / (transitions * fpt / mm):8.2f}")
        print(f"{name:32s} {latency * 1e3:10.0f} {transitions / latency:14.3g} {extra} "
              f"{result.cost:9.2f}")
    print("(GFLOP/s: network FLOPs of the plan's model transitions per second; × floor: latency "
          "over those FLOPs at the matmul rate; iLQR: 5 linearisations + 8-step line searches)")

    # iCEM vs CEM at equal compute
    per_particle = POP * ITERS * HORIZON + HORIZON  # CEM samples + the warm-start candidate
    n_icem = equal_compute_icem_population(per_particle, 40)
    cem = planners["CEM"]
    icem = ICEM(HORIZON, -effort, effort, population=n_icem, elites=40, iterations=ITERS,
                **common)
    rng = np.random.default_rng(0)
    costs = {"CEM": [], "iCEM": []}
    tr = {}
    for _ in range(args.starts):
        q = home + rng.uniform(-0.3, 0.3, 7)
        q = np.clip(q, robot.limits.lower + 0.05, robot.limits.upper - 0.05)
        x = np.concatenate([q, np.zeros(7)])
        for name, planner in (("CEM", cem), ("iCEM", icem)):
            result = planner.plan(x, model, cost)
            costs[name].append(result.cost)
            tr[name] = result.stats["transitions"]
    c, i = np.array(costs["CEM"]), np.array(costs["iCEM"])
    print(f"\niCEM vs CEM at equal compute ({tr['CEM']} vs {tr['iCEM']} transitions per plan; "
          f"iCEM population {n_icem} decaying ×1.25), cost of the plan's mean prediction over "
          f"{args.starts} start states:")
    print(f"  CEM  {c.mean():9.2f} ± {c.std():.2f}\n  iCEM {i.mean():9.2f} ± {i.std():.2f}   "
          f"(iCEM lower in {int(np.sum(i < c))}/{len(c)} starts, mean difference "
          f"{np.mean(i - c):+.2f})")

    # Receding horizon at ≥ 20 Hz. The torques stay inside the training data's range and the
    # reach cost asks to arrive at rest: outside its data the learned model is exploited.
    dt = model.signature.dt
    low, high = -DATA_SCALE * effort, DATA_SCALE * effort
    loop_cost = ReachCost(robot, target, w_velocity=1.0).to(torch.float32)
    fast = {
        "iCEM 64×2, TS∞, warm": ICEM(HORIZON, low, high, population=64, elites=8,
                                     iterations=2, **common),
        "iLQR 1 iteration, warm": ILQR(HORIZON, low, high, iterations=1, tolerance=0.0),
        "iLQR 2 iterations, warm": ILQR(HORIZON, low, high, iterations=2, tolerance=0.0),
    }
    start = np.linalg.norm(ForwardKinematics(robot).ee_position(torch.as_tensor(home)).numpy()
                           - target)
    print(f"\nreceding horizon on MuJoCo arm7 (control period {dt * 1e3:.0f} ms, horizon "
          f"{HORIZON}, torques ±{DATA_SCALE:g}·effort, {args.loop_seconds:.1f} s simulated, "
          f"real-time emulation; start distance {start:.3f} m):")
    print(f"{'configuration':26s} {'median ms':>9s} {'p90 ms':>7s} {'rate Hz':>8s} "
          f"{'ee distance m: final':>21s} {'mean 2nd half':>14s} {'min':>6s}")
    for name, planner in fast.items():
        planner.plan(x0, model, loop_cost)  # warm-up
        lat, dist = closed_loop(robot, model, loop_cost, planner, x0, args.loop_seconds, dt)
        med = float(np.median(lat))
        print(f"{name:26s} {med * 1e3:9.1f} {np.percentile(lat, 90) * 1e3:7.1f} "
              f"{1 / med:8.1f} {dist[-1]:21.3f} {dist[len(dist) // 2:].mean():14.3f} "
              f"{dist.min():6.3f}")


if __name__ == "__main__":
    main()
