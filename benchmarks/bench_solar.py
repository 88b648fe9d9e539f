"""SOLAR model throughput on the CPU: encoder and decoder images/s at 64 × 64 (two stacked
frames, the solar_reach configuration), one training iteration (a minibatch of trajectories:
encoder, structured posterior, decoder, backward, Adam, conjugate dynamics step), and a
same-run reference (a float32 matmul of 512 × 512, GFLOP/s) so the figures can be compared
across machines. Times are the best of several repeats (``timing.best_seconds``); the process
CPU time of the training iteration is reported too (the better figure on a busy machine).

    python benchmarks/bench_solar.py [--threads 1] [--batch 4] [--T 51]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from timing import best_seconds

from mbrl_ros.solar.model import FitSettings, SolarModel
from mbrl_ros.solar.vae import VAEConfig, image_tensor, stack_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2, help="trajectories per iteration")
    parser.add_argument("--T", type=int, default=51, help="frames per trajectory")
    parser.add_argument("--images", type=int, default=256, help="images per throughput call")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = VAEConfig(image_size=64, latent_dim=8, frames=2, channels=16, hidden=128)
    model = SolarModel(config, du=2)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (1, args.images, 64, 64, 3), dtype=np.uint8)
    x = stack_frames(image_tensor(frames), config.frames)[0]
    z = torch.randn(args.images, config.latent_dim)
    with torch.no_grad():
        enc = best_seconds(lambda: model.encoder(x), 3)
        dec = best_seconds(lambda: model.decoder(z), 3)
    images = rng.integers(0, 256, (args.batch, args.T, 64, 64, 3), dtype=np.uint8)
    actions = rng.normal(size=(args.batch, args.T - 1, 2))
    one = FitSettings(iterations=1, batch_size=args.batch)
    model.fit(images, actions, one)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        model.fit(images, actions, one)
    cpu = (time.process_time() - cpu0) / repeats
    wall = (time.perf_counter() - wall0) / repeats
    a = torch.randn(512, 512)
    ref = best_seconds(lambda: a @ a, 20)
    result = {
        "threads": args.threads,
        "encoder_images_per_s": args.images / enc,
        "decoder_images_per_s": args.images / dec,
        "train_iteration_s": wall,
        "train_iteration_cpu_s": cpu,
        "train_images_per_iteration": args.batch * args.T,
        "reference_matmul_gflops": 2 * 512**3 / ref / 1e9,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
