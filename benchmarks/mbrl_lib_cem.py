"""facebookresearch/mbrl-lib 0.2.0's CEM at PETS scale, timed against a plain matmul in the same
process (interleaved rounds, medians); run by ``bench_planners.py`` with the Python of a separate
venv that has ``mbrl`` (not mbrl_ros: this file imports only torch, numpy and mbrl). Prints one
JSON object: {"ms": median plan time, "floor_ratio": median of plan time × matmul FLOP/s / plan
FLOPs, "transitions": model transitions per plan, "floor_gflops": median matmul rate}.

The settings are bench_planners.py's: ensemble of 5 GaussianMLPs 3×200 SiLU (``num_layers`` 4
counts the output layer), state 14, action 7, inputs normalised, Δs targets, CEM population 400,
elite ratio 0.1, 5 iterations, momentum 0.1, horizon 20, 5 particles with TS∞ ('fixed_model'),
the mean of the last elites returned; the cost is bench_planners.py's ``quadratic_cost`` as a
reward: −Σ_t [Σ (s_t+1 − s*)² + 10⁻³ Σ (u_t / effort)²].
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import gymnasium
import mbrl.models
import mbrl.planning
import numpy as np
import omegaconf
import torch

DX, DU, POP, HORIZON, ITERS, MEMBERS, HIDDEN = 14, 7, 400, 20, 5, 5, 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--effort", required=True, help="JSON list of the 7 effort limits (N·m)")
    parser.add_argument("--x0", required=True, help="JSON list of the 14 start state values")
    parser.add_argument("--target", required=True, help="JSON list of the 14 target values s*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    effort = np.array(json.loads(args.effort), dtype=np.float32)
    x0 = np.array(json.loads(args.x0), dtype=np.float32)
    target = torch.tensor(json.loads(args.target), dtype=torch.float32)
    eff = torch.as_tensor(effort)

    net = mbrl.models.GaussianMLP(
        DX + DU,
        DX,
        "cpu",
        num_layers=4,
        ensemble_size=MEMBERS,
        hid_size=HIDDEN,
        deterministic=False,
        propagation_method="fixed_model",
        activation_fn_cfg={"_target_": "torch.nn.SiLU"},
    )
    model = mbrl.models.OneDTransitionRewardModel(
        net, target_is_delta=True, normalize=True, learned_rewards=False
    )
    rng = np.random.default_rng(0)
    model.input_normalizer.update_stats(
        np.concatenate([rng.normal(size=(1000, DX)), rng.uniform(-1, 1, (1000, DU)) * effort], 1)
    )

    def reward(actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return -(
            ((next_obs - target) ** 2).sum(-1, keepdim=True)
            + 1e-3 * ((actions / eff) ** 2).sum(-1, keepdim=True)
        )

    def done(actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(next_obs), 1, dtype=torch.bool)

    class Spaces(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (DX,), np.float32)
        action_space = gymnasium.spaces.Box(-effort, effort, (DU,), np.float32)

    env = mbrl.models.ModelEnv(
        Spaces(), model, done, reward, generator=torch.Generator().manual_seed(0)
    )
    agent_cfg = omegaconf.OmegaConf.create(
        {
            "_target_": "mbrl.planning.TrajectoryOptimizerAgent",
            "_recursive_": False,
            "action_lb": (-effort).tolist(),
            "action_ub": effort.tolist(),
            "planning_horizon": HORIZON,
            "replan_freq": 1,
            "verbose": False,
            "keep_last_solution": True,
            "optimizer_cfg": {
                "_target_": "mbrl.planning.CEMOptimizer",
                "num_iterations": ITERS,
                "elite_ratio": 0.1,
                "population_size": POP,
                "alpha": 0.1,
                "lower_bound": np.tile(-effort, (HORIZON, 1)).tolist(),
                "upper_bound": np.tile(effort, (HORIZON, 1)).tolist(),
                "return_mean_elites": True,
                "device": "cpu",
                "clipped_normal": False,
            },
        }
    )
    agent = mbrl.planning.create_trajectory_optim_agent_for_model(env, agent_cfg, MEMBERS)

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    layers = [DX + DU] + [HIDDEN] * 3 + [2 * DX]
    transitions = POP * HORIZON * ITERS * MEMBERS
    flops = transitions * 2 * sum(i * o for i, o in zip(layers[:-1], layers[1:]))
    agent.plan(x0)  # warm-up
    a @ b
    times, ratios, rates = [], [], []
    for _ in range(args.rounds):
        t = clock()
        a @ b
        rate = 2 * n**3 / (clock() - t)
        t = clock()
        agent.plan(x0)
        elapsed = clock() - t
        times.append(elapsed)
        rates.append(rate)
        ratios.append(elapsed * rate / flops)
    print(
        json.dumps(
            {
                "ms": 1e3 * statistics.median(times),
                "floor_ratio": statistics.median(ratios),
                "transitions": transitions,
                "floor_gflops": statistics.median(rates) / 1e9,
            }
        )
    )


if __name__ == "__main__":
    main()
