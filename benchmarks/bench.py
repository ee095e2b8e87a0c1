"""minidae beside PyTorch on the CPU, every row issue 10 tracks, in one run:

    python benchmarks/bench.py [--threads 2] [--rounds 10] [--json OUT.json]

Rows: a user's plain training step of the spec network (zero_grad, forward, backward, step; nothing
else) at batch 1, 64 and 256; inference at batch 1,000; the step of every zoo model at its preset's
batch size. Each row times minidae and its PyTorch twin alternating in rounds within this process
(same machine load), medians over the rounds. The header names the CPU, NumPy's BLAS and the kernel
it picked (threadpoolctl), and the thread counts.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from minidae import backend, models, nn, train  # noqa: E402
from minidae.nn.module import no_grad  # noqa: E402
from minidae.presets import PRESETS  # noqa: E402
from torch_reference import TWINS, torch_optimizer  # noqa: E402


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def blas():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, {i.get('num_threads')} "
                     f"threads)" for i in threadpool_info() if i.get("user_api") == "blas")


def pair(model_name, batch_size, inference=False):
    """(minidae step, PyTorch step) for one model: the same weights, batch, optimiser and loss."""
    config = train.TrainConfig.from_preset(model_name) if model_name in PRESETS else train.TrainConfig()
    backend.use("numpy", seed_value=0)
    ours = models.build(model_name)
    theirs = TWINS[model_name]()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(batch_size, 1, 28, 28)).astype(np.float32)
    noisy = np.clip(clean + 0.5 * rng.normal(size=clean.shape), 0, 1).astype(np.float32)
    t_noisy, t_clean = torch.from_numpy(noisy), torch.from_numpy(clean)
    if inference:
        def ours_step():
            with no_grad():
                ours(noisy)

        def theirs_step():
            with torch.no_grad():
                theirs(t_noisy)
        return ours_step, theirs_step
    opt = train.make_optimizer(config, ours.parameters())
    topt = torch_optimizer(config, theirs.parameters())
    criterion = nn.MSELoss()

    def ours_step():
        opt.zero_grad()
        criterion(ours(noisy), clean)
        ours.backward(criterion.backward())
        opt.step()

    def theirs_step():
        topt.zero_grad()
        torch.nn.functional.mse_loss(theirs(t_noisy), t_clean).backward()
        topt.step()
    return ours_step, theirs_step


def time_pair(steps, rounds, per_round):
    times = [[], []]
    for step in steps:
        for _ in range(3):
            step()
    for _ in range(rounds):
        for step, bucket in zip(steps, times):
            for _ in range(per_round):
                start = time.perf_counter()
                step()
                bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [("spec step, batch 1", "conv_dae", 1, False, 10), ("spec step, batch 64", "conv_dae", 64, False, 5),
            ("spec step, batch 256", "conv_dae", 256, False, 2), ("spec inference, batch 1,000", "conv_dae", 1000,
                                                                   True, 2)]
    rows += [(f"{name} step, batch {row['batch_size']}", name, row["batch_size"], False, 5)
             for name, row in PRESETS.items() if name != "conv_dae"]
    header = {"cpu": cpu_model(), "blas": blas(), "numpy": np.__version__, "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "allocator_tuned": backend.HOST_ALLOCATOR_TUNED,
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(header))
    print("| row | minidae (ms) | PyTorch (ms) | minidae / PyTorch |")
    print("|---|---|---|---|")
    results = []
    for label, model_name, batch, inference, per_round in rows:
        ours, theirs = time_pair(pair(model_name, batch, inference=inference), args.rounds, per_round)
        results.append({"row": label, "minidae_ms": ours * 1e3, "torch_ms": theirs * 1e3, "ratio": ours / theirs})
        print(f"| {label} | {ours * 1e3:.2f} | {theirs * 1e3:.2f} | {ours / theirs:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": header, "rows": results}, f, indent=2)


if __name__ == "__main__":
    main()
