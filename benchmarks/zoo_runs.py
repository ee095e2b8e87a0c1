"""Full-length runs of every preset, minidae and its PyTorch twin, side by side, in one call:

    python benchmarks/zoo_runs.py --out DIR [--backend cupy --device cuda] [--epochs dense_ae=40] [--deadline 480]

Starts every run as its own process at once (minidae: ``minidae train --preset NAME``; PyTorch:
``benchmarks/torch_reference.py --preset NAME``), one CPU thread each, and waits for all of them
(up to the deadline, after which the unfinished ones are stopped and reported as such). Writes
DIR/zoo.json (every run's metrics.json, or why it has none) and DIR/images.tgz (each minidae run's
denoising.png); ``python benchmarks/zoo_table.py DIR/zoo.json`` turns it into docs/results.md's table.
Since the runs share the machine, their seconds per epoch are those of a loaded machine.
"""
import argparse
import json
import os
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_EVERY = {"fc_ae": 5, "conv_ae_pool": 5, "conv_denoiser": 5, "dense_ae": 10}  # the twin's CPU evaluation is slow


def main():
    sys.path.insert(0, ROOT)
    from minidae.presets import PRESETS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", nargs="*", default=[], metavar="PRESET=N", help="shorter runs for some presets")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    parser.add_argument("--deadline", type=float, default=480, help="seconds before unfinished runs are stopped")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-samples", default=None, help="quick checks of this script only")
    parser.add_argument("--test-samples", default=None, help="quick checks of this script only")
    args = parser.parse_args()
    epochs = dict(item.split("=") for item in args.epochs)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "benchmarks"), os.environ.get("PYTHONPATH", "")]))
    runs = {}
    for preset in args.presets:
        extra = ["--epochs", epochs[preset]] if preset in epochs else []
        extra += ["--data-dir", args.data_dir] if args.data_dir else []
        for flag in ("train_samples", "test_samples"):
            if getattr(args, flag):
                extra += ["--" + flag.replace("_", "-"), getattr(args, flag)]
        runs[f"minidae-{preset}"] = [sys.executable, "-m", "minidae", "train", "--preset", preset, "--backend",
                                     args.backend, "--no-progress", "--out", os.path.join(args.out, f"minidae-{preset}"),
                                     *extra]
        runs[f"torch-{preset}"] = [sys.executable, os.path.join(ROOT, "benchmarks", "torch_reference.py"), "--preset",
                                   preset, "--device", args.device, "--threads", "1", "--eval-every",
                                   str(EVAL_EVERY.get(preset, 1)), "--out", os.path.join(args.out, f"torch-{preset}"),
                                   *extra]
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    processes = {name: subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(os.path.join(args.out, f"{name}.log"), "w"),
                                        stderr=subprocess.STDOUT) for name, command in runs.items()}
    while any(p.poll() is None for p in processes.values()) and time.time() - started < args.deadline:
        time.sleep(2)
    report = {}
    for name, process in processes.items():
        if process.poll() is None:
            process.kill()
            process.wait()
        path = os.path.join(args.out, name, "metrics.json")
        with open(os.path.join(args.out, f"{name}.log")) as f:
            tail = f.read()[-1500:]
        if os.path.exists(path):
            with open(path) as f:
                report[name] = json.load(f)
        else:
            report[name] = {"error": f"no metrics (exit code {process.returncode})", "log_tail": tail}
        print(f"{name:<26} {'ok' if 'error' not in report[name] else report[name]['error']}: "
              + (f"test MSE {report[name]['test']['mse_denoised']:.5f}" if "test" in report[name] else tail[-300:]),
              flush=True)
    report["_wall_seconds"] = time.time() - started
    with open(os.path.join(args.out, "zoo.json"), "w") as f:
        json.dump(report, f)
    with tarfile.open(os.path.join(args.out, "images.tgz"), "w:gz") as tar:
        for preset in args.presets:
            image = os.path.join(args.out, f"minidae-{preset}", "denoising.png")
            if os.path.exists(image):
                tar.add(image, arcname=f"denoising_{preset}.png")
    print(f"all runs: {report['_wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
