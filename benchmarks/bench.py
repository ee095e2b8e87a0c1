"""minidae beside PyTorch on the CPU, every row issue 10 tracks, in one run:

    python benchmarks/bench.py [--threads 2] [--rounds 10] [--json OUT.json]

Rows: a user's plain training step of the spec network (zero_grad, forward, backward, step; nothing
else) at batch 1, 64 and 256; inference at batch 1,000; the step of every zoo model at its preset's
batch size. Each row times minidae and its PyTorch twin alternating in rounds within this process
(same machine load), medians over the rounds.

Then the whole trainer: `minidae train` (spec preset) and benchmarks/torch_reference.py run as
child processes, alternating, ``--runs`` times each for ``--epochs`` epochs (data pipeline and
test evaluation included): the median epoch time (from each run's metrics.json) and the peak
resident memory of each process (its rusage). ``--epochs 10`` makes them full training runs;
``--epochs 0`` skips them. The header names the CPU, NumPy's BLAS and the kernel
it picked (threadpoolctl), and the thread counts. The last column is the floor that the GEMMs set: each
GEMM of one minidae step timed alone with its own operands, summed (and their GFLOP).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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


def gemm_floor(step, repeats=20):
    """The GEMMs of one minidae step, each timed alone on NumPy's BLAS with the very operands (shapes and
    memory layouts) the step gave it, summed: the time the step cannot go below without faster GEMMs.
    Returns (milliseconds, GFLOP)."""
    operands, original = [], backend.matmul

    def recording(a, b):
        operands.append((a.copy(order="K"), b.copy(order="K")))
        return original(a, b)
    backend.matmul = recording
    try:
        step()
    finally:
        backend.matmul = original
    total, flops = 0.0, 0
    for a, b in operands:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            original(a, b)
            times.append(time.perf_counter() - start)
        total += statistics.median(times)
        flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
    return total * 1e3, flops / 1e9


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


# Runs a command and writes its peak RSS (KiB) to a file. The trainers are started through it, not straight
# from this process: Linux carries a process's peak RSS across fork and exec, so a child of this process
# (several hundred MB by then) would report at least this process's size.
_PEAK_RSS = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL); "
             "_, status, usage = os.wait4(child.pid, 0); open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); "
             "sys.exit(os.waitstatus_to_exitcode(status))")


def trainer_runs(epochs, runs, threads):
    """[(median epoch s, peak RSS MiB)] for minidae's trainer and the PyTorch reference, each run as
    a child process ``runs`` times, alternating."""
    here = os.path.dirname(os.path.abspath(__file__))
    commands = [[sys.executable, "-m", "minidae", "train", "--preset", "conv_dae", "--no-progress"],
                [sys.executable, os.path.join(here, "torch_reference.py"), "--preset", "conv_dae",
                 "--threads", str(threads), "--eval-every", str(epochs)]]
    epochs_s, peaks = [[], []], [[], []]
    for _ in range(runs):
        for index, command in enumerate(commands):
            with tempfile.TemporaryDirectory() as out:
                peak = os.path.join(out, "peak_rss")
                done = subprocess.run([sys.executable, "-c", _PEAK_RSS, peak, *command, "--epochs", str(epochs),
                                       "--out", out])
                if done.returncode:
                    raise SystemExit(f"{' '.join(command)} failed with exit status {done.returncode}")
                with open(os.path.join(out, "metrics.json")) as f:
                    epochs_s[index] += json.load(f)["epoch_seconds"]
                with open(peak) as f:
                    peaks[index].append(int(f.read()) / 1024)  # KiB on Linux
    return [(statistics.median(e), max(p)) for e, p in zip(epochs_s, peaks)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", default=None)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trainer run (0: no trainer rows)")
    parser.add_argument("--runs", type=int, default=2, help="trainer runs of each framework")
    parser.add_argument("--no-steps", action="store_true", help="only the trainer rows")
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
    print("| row | minidae (ms) | PyTorch (ms) | minidae / PyTorch | minidae's GEMMs alone (ms; GFLOP) |")
    print("|---|---|---|---|---|")
    results = []
    for label, model_name, batch, inference, per_round in ([] if args.no_steps else rows):
        steps = pair(model_name, batch, inference=inference)
        ours, theirs = time_pair(steps, args.rounds, per_round)
        floor, gflop = gemm_floor(steps[0])
        results.append({"row": label, "minidae_ms": ours * 1e3, "torch_ms": theirs * 1e3, "ratio": ours / theirs,
                        "gemm_floor_ms": floor, "gemm_gflop": gflop})
        print(f"| {label} | {ours * 1e3:.2f} | {theirs * 1e3:.2f} | {ours / theirs:.2f} | {floor:.2f}; {gflop:.3f} |",
              flush=True)
    if args.epochs:
        (ours_epoch, ours_rss), (theirs_epoch, theirs_rss) = trainer_runs(args.epochs, args.runs, args.threads)
        for label, ours, theirs, unit in ((f"trainer epoch (s), median of {args.runs} x {args.epochs}", ours_epoch,
                                           theirs_epoch, "s"),
                                          (f"peak RSS of a {args.epochs}-epoch run (MiB)", ours_rss, theirs_rss,
                                           "MiB")):
            results.append({"row": label, "minidae": ours, "torch": theirs, "unit": unit, "ratio": ours / theirs})
            print(f"| {label} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} | |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": header, "rows": results}, f, indent=2)


if __name__ == "__main__":
    main()
