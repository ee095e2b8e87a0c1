"""Do tiny weights slow this CPU down, and does the optimisers' flush take the slowdown away? In seconds.

    python benchmarks/subnormal_check.py [WEIGHTS.npz] [--steps 20] [--batch-size 64] [--rounds 4]

WEIGHTS.npz is a state dict of the spec network (PyTorch's key names, as ``numpy.load`` reads it); by default
``../shared/data/spec10_weights.npz``, the weights at the end of a 10-epoch spec run, 39,787 of them subnormal.
Times one forward and backward at the batch size (the median of ``--rounds`` rounds, the rows alternating) with
fresh weights, with the trained weights, and with the trained weights after ``--steps`` steps of a user's own loop
(``zero_grad``, forward, backward, ``Adam.step`` with the recipe's weight decay), once with the flush on (the
default) and once with ``minidae.set_flush_denormal(False)``; and counts the weights below 1e-30 and the
subnormal ones each time.
On a CPU with a slow path for subnormal numbers (Intel cores) the trained weights are slower and the flushed
ones are not; on one without (AMD Zen), all four are alike (docs/performance.md).
"""
import argparse
import os
import sys
import time

import numpy as np

import minidae
from minidae import backend, models, nn, optim

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import blas, cpu_model  # noqa: E402

DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "spec10_weights.npz")


def counts(model):
    values = np.concatenate([p.data.ravel() for p in model.parameters()])
    tiny = np.abs(values) < 1e-30
    return int((tiny & (values != 0)).sum()), int((tiny & (np.abs(values) < np.finfo(np.float32).tiny)
                                                          & (values != 0)).sum())


def forward_backward_times(model, noisy, clean, repeats=5):
    criterion, times = nn.MSELoss(), []
    for _ in range(repeats):
        start = time.perf_counter()
        criterion(model(noisy), clean)
        model.backward(criterion.backward(), input_grad=False)
        times.append(time.perf_counter() - start)
    return times[1:]


def user_steps(model, noisy, clean, steps):
    opt, criterion = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5), nn.MSELoss()
    for _ in range(steps):
        opt.zero_grad()
        criterion(model(noisy), clean)
        model.backward(criterion.backward(), input_grad=False)
        opt.step()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="?", default=DEFAULT)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    backend.use("numpy", seed_value=0)
    with np.load(args.weights, allow_pickle=False) as f:
        state = {k: f[k] for k in f.files}

    def trained():
        model = models.conv_dae()
        model.load_state_dict(state)
        return model
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(args.batch_size, 1, 28, 28)).astype(np.float32)
    noisy = np.clip(clean + 0.5 * rng.normal(size=clean.shape), 0, 1).astype(np.float32)
    print(f"{cpu_model()}; NumPy {np.__version__}, {blas()}; batch {args.batch_size}")
    rows = [("fresh weights", models.conv_dae()), ("trained weights", trained())]
    for flush in (True, False):
        previous = minidae.set_flush_denormal(flush)
        model = trained()
        user_steps(model, noisy, clean, args.steps)
        minidae.set_flush_denormal(previous)
        rows.append((f"trained, then {args.steps} Adam steps, flush {'on' if flush else 'off'}", model))
    times = {name: [] for name, _ in rows}
    for _ in range(args.rounds):  # the rows alternate, so that a machine's drift falls on all of them alike
        for name, model in rows:
            times[name] += forward_backward_times(model, noisy, clean)
    print(f"{'weights':<42}{'fwd+bwd ms':>11}{'< 1e-30':>10}{'subnormal':>10}")
    for name, model in rows:
        below, subnormal = counts(model)
        print(f"{name:<42}{np.median(times[name]) * 1e3:>11.1f}{below:>10}{subnormal:>10}")

if __name__ == "__main__":
    main()
