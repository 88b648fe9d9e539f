"""Planner speed at PETS scale on the 7-DOF arm as multiples of a plain matmul floor measured in
the same process, interleaved with each planner; mbrl-lib side by side; replanning rates at the
mpc graph's arm7 settings; iCEM against CEM at equal compute; receding-horizon replanning.

Model: ``EnsembleModel`` with 5 members of 3×200 (SiLU, Gaussian heads) on arm7's state (14) and
torques (7), fitted for ``--fit-seconds`` to 10 000 random-torque transitions of the simulated arm
(0 s: random weights with the data's normalisation: the same speed, but plan costs then mean
little). Task: ``ReachCost`` to a reachable end-effector target, float32 like the planners.

1. Floor: a float32 matmul of two 2048² matrices; its FLOP/s, timed right before every timed plan
   (rounds alternate matmul, plan, matmul, plan, …). A plan's floor is its network FLOPs (model
   transitions × 2 × multiply-adds of one member) at that matmul rate; ``floor_ratio`` is the
   median over ``--rounds`` of plan time over floor (goal ≤ 1.2). CEM, iCEM and MPPI at PETS
   scale (population 400, elites 40, horizon 20, 5 iterations, 5 particles TS∞), random shooting
   with 2000 sequences; the model's rollout alone (the same network work without a planner) and
   iLQR (5 iterations through the mean, no FLOP model: latency only) for reference.
2. mbrl-lib 0.2.0 side by side: its CEM (``mbrl_lib_cem.py``, identical network, population,
   elites, iterations, horizon, particles and TS∞, a quadratic cost) in a subprocess with the
   Python of ``--mbrl-venv``, its own floor measured the same way; our CEM with the same cost
   here. ``mbrl_lib_ratio.cem`` = its floor ratio / ours: how many times faster this package's
   CEM is (goal ≥ 2). Null when the venv is absent. The venv (CPU torch first, so that pip does
   not pull CUDA wheels; hydra-core 1.3 and omegaconf 2.3 instead of mbrl's pins, whose hydra
   1.0.3 does not import on Python 3.11):

       python3 -m venv .venv-mbrl
       .venv-mbrl/bin/pip install torch==2.13.0        # the CPU build (find-links /opt/wheels)
       .venv-mbrl/bin/pip install --no-deps mbrl==0.2.0
       .venv-mbrl/bin/pip install numpy hydra-core==1.3.2 omegaconf==2.3.0 gymnasium==0.26.3 \\
           termcolor packaging tqdm

3. Replanning rate at the mpc graph's settings on arm7 (``config/mpc.yaml`` over the planner
   node's defaults, built by ``mpc.build_mpc`` as the node does; the fitter's ensemble 3 × 2×200):
   iLQR as configured and iCEM with the node's population, warm-started from the previous plan one
   control period later; ``replan_hz`` = 1 / median plan time (planning only: no DDS, no
   latency prediction).
4. iCEM against CEM at equal compute (the same number of model transitions), cost of the mean
   prediction of the returned plan over ``--starts`` start states (meaningful with a fitted model).
5. ``--loop-seconds`` > 0: receding-horizon replanning on MuJoCo in real-time emulation (the
   previous controller with its gains runs while a plan is computed; each plan starts one expected
   latency ahead, from the model's prediction there): latency, rate, end-effector distance.

``--clock cpu`` times with this process's CPU time instead of the wall clock (with ``--threads 1``
the figures of an idle machine on a loaded one). ``--json FILE`` writes
{"floor_gflops", "planners": {"cem"|"icem"|"mppi"|"random": {"ms", "floor_ratio"}},
"mbrl_lib_ratio": {"cem"} or null, "replan_hz": {"ilqr", "icem"}}.

    python benchmarks/bench_planners.py [--threads 1] [--clock wall|cpu] [--fit-seconds S]
        [--rounds R] [--starts N] [--loop-seconds S] [--mbrl-venv DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from mbrl_ros.common.msgconv import seconds_to_ns
from mbrl_ros.common.param_files import node_parameters
from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.ensemble import EnsembleConfig, EnsembleModel
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.planning import CEM, ICEM, ILQR, MPPI, RandomShooting, predict_ahead
from mbrl_ros.planning.mpc import PlannerSettings, build_mpc
from mbrl_ros.robot.description import home_position, load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.reach import ReachCost

ROOT = Path(__file__).resolve().parents[1]
MEMBERS, HIDDEN, LAYERS = 5, 200, 3
DATA_SCALE = 0.3  # random torques of the training data: ± this fraction of the effort limits
POP, ELITES, HORIZON, ITERS = 400, 40, 20, 5
MATMUL_N = 2048

CLOCK = time.perf_counter  # or time.process_time (--clock cpu)


def flops_per_transition(dx: int, du: int, hidden: int = HIDDEN, layers: int = LAYERS) -> int:
    """Multiply-adds × 2 of one member's network for one (s, a): in → hidden… → 2·dx."""
    sizes = [dx + du] + [hidden] * layers + [2 * dx]
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


class Floor:
    """The plain float32 matmul (2048²) whose FLOP/s is the floor; every rate it measured."""

    def __init__(self):
        self.a, self.b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
        self.a @ self.b
        self.rates: list[float] = []

    def rate(self) -> float:
        t = CLOCK()
        self.a @ self.b
        self.rates.append(2 * MATMUL_N**3 / max(CLOCK() - t, 1e-9))
        return self.rates[-1]


def interleaved(floor: Floor, fn, flops, rounds: int) -> tuple[float, float, object]:
    """Median seconds of ``fn()`` and median ratio to its floor (``flops(result)`` at the matmul
    rate timed right before each call), over ``rounds`` after one warm-up call; the last result."""
    out = fn()
    times, ratios = [], []
    for _ in range(rounds):
        rate = floor.rate()
        t = CLOCK()
        out = fn()
        elapsed = CLOCK() - t
        times.append(elapsed)
        ratios.append(elapsed * rate / flops(out))
    return statistics.median(times), statistics.median(ratios), out


def make_model(robot, fit_seconds: float, members=MEMBERS, hidden=HIDDEN, layers=LAYERS):
    data = random_torque_dataset(robot, episodes=100, steps=100, seed=0, scale=DATA_SCALE)
    config = EnsembleConfig(
        members=members,
        hidden=hidden,
        layers=layers,
        max_seconds=max(fit_seconds, 1.0),
        max_epochs=1000,
        seed=0,
    )
    model = EnsembleModel(ModelSignature.of(data), device="cpu", config=config)
    if fit_seconds > 0:
        train, val = data.split(0.2, seed=0)
        report = model.fit(train, val)
        print(
            f"model: fitted {report.seconds:.0f} s on {len(train)} transitions, "
            f"validation loss {report.val_loss[-1] if report.val_loss else float('nan'):.4g}"
        )
    else:
        model.stats = data.stats()
        print("model: random weights with the data's normalisation (costs are not meaningful)")
    return model


def quadratic_cost(target: torch.Tensor, effort: torch.Tensor):
    """Σ_t [Σ (s_t+1 − s*)² + 10⁻³ Σ (u_t / effort)²]: mbrl_lib_cem.py's reward, negated."""

    def cost(states, actions):
        return ((states[..., 1:, :] - target) ** 2).sum((-1, -2)) + 1e-3 * (
            (actions / effort) ** 2
        ).sum((-1, -2))

    return cost


def mbrl_lib_cem(venv: Path, args, effort, x0, target) -> dict | None:
    """mbrl_lib_cem.py's JSON from the venv's Python, or None (said why) when it cannot run."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"mbrl-lib: no venv at {venv} (see this file's docstring): column skipped")
        return None
    cmd = [
        str(python),
        str(Path(__file__).with_name("mbrl_lib_cem.py")),
        "--threads",
        str(args.threads),
        "--rounds",
        str(args.rounds),
        "--clock",
        args.clock,
        "--effort",
        json.dumps(effort.tolist()),
        "--x0",
        json.dumps(x0.tolist()),
        "--target",
        json.dumps(target.tolist()),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        print(
            f"mbrl-lib: {venv} failed (exit {run.returncode}): "
            f"{run.stderr.strip().splitlines()[-1:]}; column skipped"
        )
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def graph_settings(planner: str) -> dict:
    """The planner node's settings in the mpc graph (config/mpc.yaml over the node's defaults)
    with ``planner``."""
    config = yaml.safe_load((ROOT / "config" / "mpc.yaml").read_text())
    return PlannerSettings.select(node_parameters(config, "mpc_planner")).replace(
        planner=planner, device="cpu"
    )


def replan_seconds(robot, model, planner: str, plans: int) -> float:
    """Median time of warm-started plans at the graph's settings, each one control period after
    the previous one, from states along the previous plan."""
    mpc = build_mpc(robot, range(robot.n_joints), graph_settings(planner))
    x = np.concatenate([home_position(robot), np.zeros(robot.n_joints)])
    mpc.cost.set_target(
        ForwardKinematics(robot).ee_position(torch.as_tensor(x[: robot.n_joints] + 0.3)).numpy()
    )
    dt_ns = seconds_to_ns(model.signature.dt)
    warm, times = None, []
    for i in range(plans + 1):
        t = CLOCK()
        result = mpc.planner.plan(x, model, mpc.cost, warm=warm, start_ns=i * dt_ns)
        times.append(CLOCK() - t)
        if result.ok:
            warm, x = result.controller, result.states[1]
    return statistics.median(times[1:])


def equal_compute_icem_population(cem_transitions_per_particle: int, elites: int) -> int:
    """iCEM population N whose decaying schedule evaluates about as many sequences as CEM."""
    best = POP
    for n in range(POP, 4 * POP):
        planner = ICEM(
            HORIZON, -np.ones(1), np.ones(1), population=n, elites=elites, iterations=ITERS
        )
        total = sum(planner.population_size(i) for i in range(ITERS)) + ITERS - 1 + 2
        if total * HORIZON > cem_transitions_per_particle:
            break
        best = n
    return best


def closed_loop(robot, model, cost, planner, x_start, seconds: float, dt: float):
    """Real-time emulation on MuJoCo; returns latencies (s) and the end-effector distance to
    the target (m) after every control period. Each plan starts one expected latency (the last
    one's) ahead, from the state the model predicts there under the running controller."""
    sim = ArmSimulator(
        robot, SimConfig(control_period=dt, seed=1, initial_position=tuple(x_start[:7]))
    )
    sim.reset()
    dt_ns = seconds_to_ns(dt)
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
        x_plan = predict_ahead(
            model, x, stamp, start, controller, planner.action_low, planner.action_high
        )
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
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time with the wall clock, or with this process's CPU time (with "
        "--threads 1: the figures of an idle machine on a loaded one)",
    )
    parser.add_argument(
        "--fit-seconds",
        type=float,
        default=60.0,
        help="training time of the ensemble (0: random weights)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="timed plans per planner, each after its own matmul (medians)",
    )
    parser.add_argument("--starts", type=int, default=5, help="start states for iCEM vs CEM")
    parser.add_argument(
        "--loop-seconds",
        type=float,
        default=0.0,
        help="simulated seconds of each closed-loop run (0: skip)",
    )
    parser.add_argument(
        "--mbrl-venv",
        type=Path,
        default=ROOT / ".venv-mbrl",
        help="venv with mbrl==0.2.0 for the side-by-side (absent: skipped)",
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file as JSON")
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.starts < 0 or args.loop_seconds < 0:
        parser.error("--threads and --rounds must be ≥ 1, --starts and --loop-seconds ≥ 0")
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    robot = load_robot("arm7")
    model = make_model(robot, args.fit_seconds)
    effort = robot.limits.effort
    home = home_position(robot)
    target = (
        ForwardKinematics(robot)
        .ee_position(torch.as_tensor(home + np.array([0.4, 0.3, 0.0, 0.3, 0.0, 0.2, 0.0])))
        .numpy()
    )
    cost = ReachCost(robot, target).to(torch.float32)
    x0 = np.concatenate([home, np.zeros(7)])
    fpt = flops_per_transition(model.dx, model.du)
    floor = Floor()

    def plan_flops(result) -> float:
        return result.stats["transitions"] * fpt

    common = dict(mode="tsinf", particles=MEMBERS, seed=0)
    pets = dict(population=POP, elites=ELITES, iterations=ITERS, **common)
    planners = {
        "cem": CEM(HORIZON, -effort, effort, **pets),
        "icem": ICEM(HORIZON, -effort, effort, **pets),
        "mppi": MPPI(
            HORIZON, -effort, effort, samples=POP, iterations=ITERS, temperature=1.0, **common
        ),
        "random": RandomShooting(HORIZON, -effort, effort, samples=POP * ITERS, **common),
    }
    print(
        f"threads: {torch.get_num_threads()}, clock: {args.clock}, {args.rounds} rounds each "
        f"of (matmul {MATMUL_N}², plan); PETS scale: ensemble {MEMBERS} × {LAYERS}×{HIDDEN} "
        f"SiLU, population {POP}, horizon {HORIZON}, {ITERS} iterations, {MEMBERS} particles "
        f"TS∞; random shooting {POP * ITERS} sequences\n"
    )
    print(f"{'planner':30s} {'ms':>8s} {'floor ms':>9s} {'× floor':>8s} {'cost':>9s}")
    figures: dict = {}

    def row(name, seconds, ratio, result_cost=float("nan")):
        print(
            f"{name:30s} {seconds * 1e3:8.1f} {seconds / ratio * 1e3:9.1f} {ratio:8.2f} "
            f"{result_cost:9.2f}"
        )

    for key, planner in planners.items():
        seconds, ratio, result = interleaved(
            floor, lambda p=planner: p.plan(x0, model, cost), plan_flops, args.rounds
        )
        figures[key] = {"ms": seconds * 1e3, "floor_ratio": ratio}
        row(planner.name, seconds, ratio, result.cost)
    x = torch.as_tensor(x0, dtype=torch.float32).expand(MEMBERS, POP + 1, -1)
    u = torch.zeros(POP + 1, HORIZON, 7).expand(MEMBERS, -1, -1, -1)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        seconds, ratio, _ = interleaved(
            floor,
            lambda: model.rollout(x, u, "tsinf", gen),
            lambda _: MEMBERS * (POP + 1) * HORIZON * fpt,
            args.rounds,
        )
    row(f"(rollout alone, {POP + 1} × {HORIZON})", seconds, ratio)
    ilqr = ILQR(HORIZON, -effort, effort, iterations=ITERS, tolerance=0.0)
    seconds, _, result = interleaved(
        floor, lambda: ilqr.plan(x0, model, cost), lambda _: 1.0, args.rounds
    )
    print(
        f"{'(ilqr, 5 iterations, mean)':30s} {seconds * 1e3:8.1f} {'—':>9s} {'—':>8s} "
        f"{result.cost:9.2f}"
    )
    floor_gflops = statistics.median(floor.rates) / 1e9
    print(
        f"floor: matmul {floor_gflops:.1f} GFLOP/s (median of {len(floor.rates)}, range "
        f"{min(floor.rates) / 1e9:.1f}–{max(floor.rates) / 1e9:.1f}); goal ≤ 1.2× floor"
    )

    # mbrl-lib side by side, with the same quadratic cost on both sides
    q_target = torch.as_tensor(np.concatenate([home + 0.3, np.zeros(7)]), dtype=torch.float32)
    quad = quadratic_cost(q_target, torch.tensor(effort, dtype=torch.float32))
    cem = planners["cem"]
    seconds, ours, _ = interleaved(
        floor, lambda: cem.plan(x0, model, quad), plan_flops, args.rounds
    )
    theirs = mbrl_lib_cem(args.mbrl_venv, args, effort, x0, q_target.numpy())
    mbrl_ratio = None
    if theirs is not None:
        mbrl_ratio = {"cem": theirs["floor_ratio"] / ours}
        print(
            f"\nCEM side by side (quadratic cost): mbrl-lib 0.2.0 {theirs['ms']:.0f} ms = "
            f"{theirs['floor_ratio']:.2f}× its floor ({theirs['floor_gflops']:.1f} GFLOP/s), "
            f"mbrl_ros {seconds * 1e3:.0f} ms = {ours:.2f}× its floor: "
            f"{mbrl_ratio['cem']:.2f}× faster (goal ≥ 2)"
        )

    # replanning at the mpc graph's arm7 settings
    settings = graph_settings("ilqr")
    graph_model = make_model(robot, 0.0, members=3, hidden=200, layers=2)
    replan_hz = {
        name: 1.0 / replan_seconds(robot, graph_model, name, 2 * args.rounds)
        for name in ("ilqr", "icem")
    }
    print(
        f"\nreplanning at the mpc graph's arm7 settings (horizon {settings.horizon}, "
        f"iLQR {settings.iterations} iterations, iCEM {settings.samples} samples × "
        f"{settings.iterations} iterations, '{settings.propagation}' propagation, "
        f"ensemble 3 × 2×200, warm starts): iLQR {replan_hz['ilqr']:.1f} Hz, "
        f"iCEM {replan_hz['icem']:.1f} Hz (goal ≥ 20 Hz in the graph)"
    )

    if args.starts:
        icem_vs_cem(robot, model, cost, planners["cem"], common, args.starts)
    if args.loop_seconds > 0:
        receding_horizon(robot, model, target, x0, common, args.loop_seconds)

    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "floor_gflops": floor_gflops,
                    "planners": figures,
                    "mbrl_lib_ratio": mbrl_ratio,
                    "replan_hz": replan_hz,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nwrote {args.json}")


def icem_vs_cem(robot, model, cost, cem, common, starts: int) -> None:
    per_particle = POP * ITERS * HORIZON + HORIZON  # CEM samples + the warm-start candidate
    n_icem = equal_compute_icem_population(per_particle, ELITES)
    effort = robot.limits.effort
    icem = ICEM(
        HORIZON, -effort, effort, population=n_icem, elites=ELITES, iterations=ITERS, **common
    )
    home = home_position(robot)
    rng = np.random.default_rng(0)
    costs = {"CEM": [], "iCEM": []}
    tr = {}
    for _ in range(starts):
        q = home + rng.uniform(-0.3, 0.3, 7)
        q = np.clip(q, robot.limits.lower + 0.05, robot.limits.upper - 0.05)
        x = np.concatenate([q, np.zeros(7)])
        for name, planner in (("CEM", cem), ("iCEM", icem)):
            result = planner.plan(x, model, cost)
            costs[name].append(result.cost)
            tr[name] = result.stats["transitions"]
    c, i = np.array(costs["CEM"]), np.array(costs["iCEM"])
    print(
        f"\niCEM vs CEM at equal compute ({tr['CEM']} vs {tr['iCEM']} transitions per plan; "
        f"iCEM population {n_icem} decaying ×1.25), cost of the plan's mean prediction over "
        f"{starts} start states:"
    )
    print(
        f"  CEM  {c.mean():9.2f} ± {c.std():.2f}\n  iCEM {i.mean():9.2f} ± {i.std():.2f}   "
        f"(iCEM lower in {int(np.sum(i < c))}/{len(c)} starts, mean difference "
        f"{np.mean(i - c):+.2f})"
    )


def receding_horizon(robot, model, target, x0, common, seconds: float) -> None:
    # The torques stay inside the training data's range and the reach cost asks to arrive at
    # rest: outside its data the learned model is exploited.
    dt = model.signature.dt
    effort = robot.limits.effort
    low, high = -DATA_SCALE * effort, DATA_SCALE * effort
    loop_cost = ReachCost(robot, target, w_velocity=1.0).to(torch.float32)
    fast = {
        "iCEM 64×2, TS∞, warm": ICEM(
            HORIZON, low, high, population=64, elites=8, iterations=2, **common
        ),
        "iLQR 1 iteration, warm": ILQR(HORIZON, low, high, iterations=1, tolerance=0.0),
        "iLQR 2 iterations, warm": ILQR(HORIZON, low, high, iterations=2, tolerance=0.0),
    }
    home = home_position(robot)
    start = np.linalg.norm(
        ForwardKinematics(robot).ee_position(torch.as_tensor(home)).numpy() - target
    )
    print(
        f"\nreceding horizon on MuJoCo arm7 (control period {dt * 1e3:.0f} ms, horizon "
        f"{HORIZON}, torques ±{DATA_SCALE:g}·effort, {seconds:.1f} s simulated, "
        f"real-time emulation; start distance {start:.3f} m):"
    )
    print(
        f"{'configuration':26s} {'median ms':>9s} {'p90 ms':>7s} {'rate Hz':>8s} "
        f"{'ee distance m: final':>21s} {'mean 2nd half':>14s} {'min':>6s}"
    )
    for name, planner in fast.items():
        planner.plan(x0, model, loop_cost)  # warm-up
        lat, dist = closed_loop(robot, model, loop_cost, planner, x0, seconds, dt)
        med = float(np.median(lat))
        print(
            f"{name:26s} {med * 1e3:9.1f} {np.percentile(lat, 90) * 1e3:7.1f} "
            f"{1 / med:8.1f} {dist[-1]:21.3f} {dist[len(dist) // 2 :].mean():14.3f} "
            f"{dist.min():6.3f}"
        )


if __name__ == "__main__":
    sys.exit(main())
