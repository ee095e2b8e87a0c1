"""Every GPU measurement of docs/performance.md and docs/results.md in one call (GPU time is scarce):

    python benchmarks/gpu_report.py --out DIR [--data-dir MNIST_DIR] [--parts contenders,fast_paths,...]

Parts (each reports its own failure, and the rest goes on):
``environment``  the device, driver, CUDA runtime, CuPy, PyTorch, NumPy and Python versions.
``suite``        the whole test suite with its CuPy cases (pytest, in ``--workers`` processes), its summary.
``contenders``   the spec network's training step at batch 64 (and 1, 256), alternating in one process, timed
                 with CUDA events over blocks of steps: minidae eager and replayed as a CUDA graph; PyTorch
                 eager, with its whole step captured as a CUDA graph (torch.cuda.graph, capturable Adam), and
                 with torch.compile(model) in the default and "reduce-overhead" modes (compile time apart);
                 kernels and copies per step and GPU busy time from the CUDA profiler.
``fast_paths``   minidae's CuPy replacements switched on group by group (minidae.speed.set_disabled).
``profile``      the captured graph's node counts and where its GPU time goes, kernel by kernel.
``spec_runs``    the spec recipe for 10 epochs: ``minidae train --backend cupy`` and
                 benchmarks/torch_reference.py on CUDA, test MSE side by side (within 3%?).
Writes DIR/gpu_report.json and prints Markdown tables.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from step_time import (compare, cuda_events, kernels_per_step, minidae_runner, torch_compiled_runner,  # noqa: E402
                       torch_graph_runner, torch_runner)

VARIANTS = [
    ("CuPy, no fast path", dict(adam=False, im2col=False, fused=False, matmul=False), False),
    ("+ fused Adam", dict(adam=True, im2col=False, fused=False, matmul=False), False),
    ("+ im2col/col2im kernels", dict(adam=True, im2col=True, fused=False, matmul=False), False),
    ("+ fused elementwise kernels", dict(adam=True, im2col=True, fused=True, matmul=False), False),
    ("+ own cuBLAS handle (eager)", dict(adam=True, im2col=True, fused=True, matmul=True), False),
    ("+ CUDA graph", dict(adam=True, im2col=True, fused=True, matmul=True), True),
]


def environment():
    import cupy
    import torch
    props = cupy.cuda.runtime.getDeviceProperties(0)
    return {"gpu": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
            "driver": cupy.cuda.runtime.driverGetVersion(), "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cupy": cupy.__version__, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "numpy": np.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def suite(workers, keyword=None):
    """The test suite, CuPy cases included (or those ``keyword`` selects): pytest's summary line, and the
    failures' first lines."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "300",
               "-o", "addopts=--doctest-modules --import-mode=importlib"] + (["-k", keyword] if keyword else [])
    if workers > 1:
        command += ["-n", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=os.path.dirname(HERE), capture_output=True, text=True)
    lines = (done.stdout + done.stderr).splitlines()
    return {"returncode": done.returncode, "seconds": time.perf_counter() - started,
            "summary": next((line for line in reversed(lines) if " in " in line and ("passed" in line or
                                                                                      "failed" in line)), None),
            "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))][:60],
            "tail": "\n".join(lines[-80:])}


def table(runners, steps):
    """Rows of median and spread per step, kernels and copies per step and GPU busy time, for ``runners``."""
    medians = compare(runners, steps, rounds=10, warmup=5)
    rows = []
    for runner, median in zip(runners, medians):
        kernels, copies, busy = kernels_per_step(runner)
        rows.append({"name": runner.name, "median_ms": median * 1e3, "min_ms": min(runner.times) * 1e3,
                     "max_ms": max(runner.times) * 1e3, "kernels": kernels, "copies": copies, "gpu_busy_us": busy,
                     "compile_s": getattr(runner, "compile_seconds", None)})
    return rows


def contenders(batch_size, steps, compiled=True):
    runners = [minidae_runner(batch_size, "cupy", name="minidae eager"),
               minidae_runner(batch_size, "cupy", graph=True, name="minidae, CUDA graph"),
               torch_runner(batch_size, "cuda", name="PyTorch eager"), torch_graph_runner(batch_size)]
    failures = {}
    if compiled:
        for mode in (None, "reduce-overhead"):
            try:
                runners.append(torch_compiled_runner(batch_size, mode))
            except Exception as exc:  # no compiler there, or a compile error: say so, time the rest
                failures[f"torch.compile(mode={mode!r})"] = f"{type(exc).__name__}: {exc}"[:2000]
    return {"rows": table(runners, steps), "failures": failures}


def fast_paths(batch_size, steps):
    return {"rows": table([minidae_runner(batch_size, "cupy", graph=graph, fast_paths=flags, name=name)
                           for name, flags, graph in VARIANTS], steps)}


def profile(batch_size, steps=20, count=15):
    """The graphed step's node counts and its kernels ranked by GPU time per step."""
    from minidae import speed
    from minidae.speed import cuda
    speed.set_disabled()
    runner = minidae_runner(batch_size, "cupy", graph=True)
    for _ in range(3):
        runner.run()
    nodes = {}
    for cell in runner.run.__closure__ or ():
        if isinstance(cell.cell_contents, cuda.GraphedStep):
            graphed = cell.cell_contents
            nodes = {str(k): g.kernels for k, g in graphed.graphs.items()} or {"failed": graphed.failed}
    totals = {}
    for event in cuda_events(runner, steps):
        calls, micros = totals.get(event.name, (0, 0.0))
        totals[event.name] = (calls + 1, micros + event.time_range.elapsed_us())
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])
    return {"graph_nodes": nodes, "busy_us_per_step": sum(m for _, m in totals.values()) / steps,
            "kernels": [{"kernel": name[:100], "calls_per_step": calls / steps, "us_per_step": micros / steps}
                        for name, (calls, micros) in ranked[:count]]}


def spec_runs(data_dir, out, epochs=10):
    """The spec recipe on the GPU, minidae (CuPy, graphed) and its PyTorch twin (CUDA), one run each."""
    results = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    commands = {"minidae": [sys.executable, "-m", "minidae", "train", "--backend", "cupy", "--epochs", str(epochs),
                            "--out", os.path.join(out, "minidae"), "--no-progress"],
                "pytorch": [sys.executable, os.path.join(HERE, "torch_reference.py"), "--device", "cuda",
                            "--epochs", str(epochs), "--out", os.path.join(out, "pytorch"), "--eval-every", "10"]}
    for name, command in commands.items():
        if data_dir:
            command += ["--data-dir", data_dir]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        entry = {"seconds": time.perf_counter() - started, "returncode": done.returncode,
                 "tail": (done.stdout + done.stderr)[-1500:]}
        try:
            with open(os.path.join(out, name, "metrics.json")) as f:
                metrics = json.load(f)
            entry.update(test=metrics.get("test"), epoch_seconds=metrics.get("epoch_seconds"),
                         test_losses=metrics.get("test_losses"))
        except (OSError, ValueError) as exc:
            entry["metrics_error"] = str(exc)
        results[name] = entry
    try:
        ours, theirs = (results[k]["test"]["mse_denoised"] for k in ("minidae", "pytorch"))
        results["relative_difference"] = ours / theirs - 1
    except (KeyError, TypeError):
        pass
    return results


def print_rows(title, rows):
    print(f"\n{title}")
    print("| step | median ms (min-max) | / fastest PyTorch | kernels + copies per step | GPU busy us | compile s |")
    print("|---|---|---|---|---|---|")
    torch_rows = [r["median_ms"] for r in rows if r["name"].startswith("PyTorch")]
    best = min(torch_rows) if torch_rows else None
    for r in rows:
        ratio = f"{r['median_ms'] / best:.2f}" if best else "-"
        compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") else ""
        print(f"| {r['name']} | {r['median_ms']:.3f} ({r['min_ms']:.3f}-{r['max_ms']:.3f}) | {ratio} | "
              f"{r['kernels']:.0f} + {r['copies']:.0f} | {r['gpu_busy_us']:.0f} | {compile_s} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/gpu-report")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--parts", default="environment,suite,contenders,fast_paths,profile,spec_runs")
    parser.add_argument("--workers", type=int, default=8, help="pytest processes for the suite (pytest-xdist)")
    parser.add_argument("--suite-filter", default=None,
                        help="a pytest -k expression (\"cupy or cuda\": the CuPy cases, which CI cannot run)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    parts = args.parts.split(",")
    report = {}

    def part(name, work):
        if name.split(":")[0] not in parts:
            return
        started = time.perf_counter()
        try:
            report[name] = work()
        except Exception:
            report[name] = {"error": traceback.format_exc()}
            print(f"--- {name} FAILED\n{report[name]['error']}", flush=True)
        print(f"--- {name}: {time.perf_counter() - started:.1f} s", flush=True)
        with open(os.path.join(args.out, "gpu_report.json"), "w") as f:  # after every part: a kill keeps the rest
            json.dump(report, f, indent=2, default=str)

    part("environment", environment)
    part("suite", lambda: suite(args.workers, args.suite_filter))  # child processes first: a broken CUDA context
    part("spec_runs", lambda: spec_runs(args.data_dir, tempfile.mkdtemp()))  # in this one would stop the rest
    part("contenders:64", lambda: contenders(64, args.steps))
    part("profile:64", lambda: profile(64))
    part("fast_paths:64", lambda: fast_paths(64, args.steps // 2))
    for batch_size in (1, 256):
        part(f"contenders:{batch_size}", lambda b=batch_size: contenders(b, args.steps // 2, compiled=False))

    print(json.dumps(report.get("environment"), default=str))
    if "suite" in report:
        print(f"suite: {report['suite'].get('summary')} ({report['suite'].get('seconds', 0):.0f} s)")
        for line in report["suite"].get("failures", []):
            print("  " + line[:300])
    for key, entry in report.items():
        if isinstance(entry, dict) and "rows" in entry:
            print_rows(f"{key} (batch {key.split(':')[1]})", entry["rows"])
            for name, failure in entry.get("failures", {}).items():
                print(f"  {name} failed: {failure[:300]}")
    prof = report.get("profile:64", {})
    if "kernels" in prof:
        print(f"\ngraph nodes {prof['graph_nodes']}; GPU busy {prof['busy_us_per_step']:.0f} us per step")
        for entry in prof["kernels"]:
            print(f"  {entry['us_per_step']:7.1f} us/step  {entry['calls_per_step']:4.1f} calls  {entry['kernel']}")
    runs = report.get("spec_runs", {})
    for name in ("minidae", "pytorch"):
        if name in runs:
            r = runs[name]
            print(f"{name}: rc {r['returncode']}, {r['seconds']:.1f} s, test {r.get('test')}, "
                  f"epochs {r.get('epoch_seconds')}")
    if "relative_difference" in runs:
        print(f"test MSE minidae / PyTorch - 1 = {runs['relative_difference']:+.4f}")


if __name__ == "__main__":
    main()
