"""What the per-layer diagnostics cost: the spec network's training step with and without them, side by side.

    python benchmarks/diagnostics_cost.py [--rounds 20] [--steps 50] [--batch-size 64] [--model conv_dae]

One model and optimiser; rounds of ``--steps`` steps alternate between the plain step and the step wrapped as
the trainer wraps it (``Diagnostics.before_step`` / ``after_step`` at the trainer's cadence, every 25
iterations), so that both see the same machine at the same moment. Each round's time per step is kept and the
medians are printed, with the median and quartiles of each round's ratio (issue 19 asks for the diagnostics to
cost under 3%; the machine's drift between rounds is larger than that, hence the pairing).
"""
import argparse
import statistics
import time

import numpy as np

from minidae import backend, models, nn, optim
from minidae.diagnostics import Diagnostics
from minidae.train import CHECK_EVERY


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50, help="steps per round (a multiple of 25 is fair)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="conv_dae")
    args = parser.parse_args()
    backend.use("numpy", seed_value=0)
    backend.tune_host_allocator()
    model = models.build(args.model)
    optimizer, criterion = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5), nn.MSELoss()
    diagnostics = Diagnostics(model, CHECK_EVERY)
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(args.batch_size, 1, 28, 28)).astype(np.float32)
    noisy = np.clip(clean + 0.5 * rng.normal(size=clean.shape), 0, 1).astype(np.float32)

    def step():
        optimizer.zero_grad()
        loss = criterion(model(noisy), clean)
        model.backward(criterion.backward())
        optimizer.step()
        return loss

    iteration = 0

    def watched():
        nonlocal iteration
        diagnostics.before_step(iteration)
        loss = step()
        diagnostics.after_step(iteration, noisy)
        iteration += 1
        return loss

    times = {"without": [], "with": []}
    for _ in range(3 * CHECK_EVERY):  # warm up both
        step(), watched()
    for _ in range(args.rounds):
        for name, run in (("without", step), ("with", watched)):
            start = time.perf_counter()
            for _ in range(args.steps):
                run()
            times[name].append((time.perf_counter() - start) / args.steps)
    without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    ratios = sorted(w / o for w, o in zip(times["with"], times["without"]))  # each round's pair, side by side
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"{args.model}, batch {args.batch_size}, {args.rounds} rounds of {args.steps} steps, diagnostics every "
          f"{CHECK_EVERY}: step without {without * 1e3:.2f} ms, with {with_ * 1e3:.2f} ms (medians); "
          f"ratio per round: median {statistics.median(ratios):.3f}, quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}")


if __name__ == "__main__":
    main()
