"""The spec network's training step (docs/spec.md) at two commits, alternating in one process
(same machine, same moment):

    python benchmarks/compare_commits.py BASE [OTHER ...] [--batch-size 64] [--rounds 16] [--model conv_dae]

Each commit's ``minidae`` package is extracted with ``git archive`` into a temporary directory under its own
name and imported beside the others; "HEAD" is the working tree's package. Rounds of 10 steps alternate
between them and the median step is printed, so that a change's effect on speed is measured side by side
rather than across minutes of drifting machine load.
"""
import argparse
import importlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(commit, directory):
    """The package at ``commit`` as a module named minidae_<n> (the working tree's for "HEAD")."""
    if commit == "HEAD":
        sys.path.insert(0, ROOT)
        return importlib.import_module("minidae")
    name = f"minidae_{commit[:10]}"
    archive = subprocess.run(["git", "archive", commit, "minidae"], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    os.rename(os.path.join(directory, "minidae"), os.path.join(directory, name))
    sys.path.insert(0, directory)
    return importlib.import_module(name)


def step(package, batch_size, model="conv_dae"):
    package.backend.use("numpy", seed_value=0)
    package.backend.tune_host_allocator()
    net = package.models.build(model)
    train = importlib.import_module(package.__name__ + ".train")
    presets = importlib.import_module(package.__name__ + ".presets")
    config = train.TrainConfig.from_preset(model) if model in presets.PRESETS else None
    opt = (train.make_optimizer(config, net.parameters()) if config else
           package.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5))
    criterion = package.nn.MSELoss()
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(batch_size, 1, 28, 28)).astype(np.float32)
    noisy = np.clip(clean + 0.5 * rng.normal(size=clean.shape), 0, 1).astype(np.float32)

    def run():
        opt.zero_grad()
        criterion(net(noisy), clean)
        net.backward(criterion.backward())
        opt.step()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commits", nargs="+")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--model", default="conv_dae", help="a model of minidae.models.MODELS, with its preset's optimiser")
    args = parser.parse_args()
    commits = args.commits + ([] if "HEAD" in args.commits else ["HEAD"])
    with tempfile.TemporaryDirectory() as directory:
        runs = {commit: step(load(commit, directory), args.batch_size, args.model) for commit in commits}
        times = {commit: [] for commit in commits}
        for run in runs.values():
            for _ in range(5):
                run()
        for _ in range(args.rounds):
            for commit, run in runs.items():
                for _ in range(10):
                    start = time.perf_counter()
                    run()
                    times[commit].append(time.perf_counter() - start)
    for commit in commits:
        print(f"{commit:<12} median step {statistics.median(times[commit]) * 1e3:7.2f} ms ({args.model}, batch "
              f"{args.batch_size})")


if __name__ == "__main__":
    main()
