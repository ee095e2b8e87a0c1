"""Every GPU measurement of docs/performance.md in one call (GPU time is scarce):

    python benchmarks/gpu_report.py --out DIR [--data-dir MNIST_DIR]

1. the training step at batch 64 (and 1, 256): minidae on CuPy with its fast paths switched on one
   by one (plain CuPy; + fused Adam; + im2col/col2im kernels; + own cuBLAS handle; + CUDA graph)
   beside PyTorch eager (its defaults, and with cuDNN's TF32 off), alternating in one process,
   timed with CUDA events over blocks of steps; kernels per step and GPU busy time from the CUDA
   profiler; the captured graph's node count;
2. one trainer epoch on the full MNIST (data pipeline included), eager and graphed, against the
   step time x batches.
Writes DIR/gpu_report.json and prints a Markdown table. Each part reports its own failure and
the rest goes on.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_time import compare, cuda_events, kernels_per_step, minidae_runner, torch_runner  # noqa: E402

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
            "cupy": cupy.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def step_table(batch_size, steps, variants=VARIANTS):
    runners = [minidae_runner(batch_size, "cupy", graph=graph, fast_paths=flags, name=name)
               for name, flags, graph in variants]
    runners += [torch_runner(batch_size, "cuda", name="PyTorch eager (defaults: cuDNN TF32 on)"),
                torch_runner(batch_size, "cuda", tf32=False, name="PyTorch eager, TF32 off")]
    medians = compare(runners, steps, rounds=10, warmup=5)
    spreads = [(min(r.times), max(r.times)) for r in runners]
    rows = []
    for runner, median, spread in zip(runners, medians, spreads):
        kernels, copies, busy = kernels_per_step(runner)
        rows.append({"name": runner.name, "median_ms": median * 1e3, "min_ms": spread[0] * 1e3,
                     "max_ms": spread[1] * 1e3, "kernels": kernels, "copies": copies, "gpu_busy_us": busy})
    return rows, graph_nodes(runners[len(variants) - 1]), top_kernels(runners[len(variants) - 1])


def top_kernels(runner, steps=20, count=12):
    """Where the GPU time of a step goes: the kernels with the most device time per step."""
    totals = {}
    for event in cuda_events(runner, steps):
        calls, micros = totals.get(event.name, (0, 0.0))
        totals[event.name] = (calls + 1, micros + event.time_range.elapsed_us())
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])[:count]
    return [{"kernel": name[:90], "calls_per_step": calls / steps, "us_per_step": micros / steps}
            for name, (calls, micros) in ranked]


def graph_nodes(runner):
    """Node counts of the graph a graphed runner captured (found through its closure)."""
    from minidae.speed import cuda
    for cell in runner.run.__closure__ or ():
        value = cell.cell_contents
        if isinstance(value, cuda.GraphedStep):
            return {str(key): graph.kernels for key, graph in value.graphs.items()} or {"failed": value.failed}
    return {}


def epochs(data_dir, out):
    from minidae import speed, train
    results = {}
    for label, graph in (("eager", False), ("graph", True)):
        speed.set_disabled()
        metrics = train.train(train.TrainConfig(backend="cupy", epochs=2, test_samples=500, data_dir=data_dir,
                                                out=os.path.join(out, label), progress=False, cuda_graph=graph))
        results[label] = {"epoch_seconds": metrics["epoch_seconds"], "test": metrics["test"]}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/gpu-report")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    report = {}

    def part(name, work):
        started = time.perf_counter()
        try:
            report[name] = work()
        except Exception:
            report[name] = {"error": traceback.format_exc()}
            print(f"--- {name} FAILED\n{report[name]['error']}", flush=True)
        print(f"--- {name}: {time.perf_counter() - started:.1f} s", flush=True)

    part("environment", environment)
    for batch_size in (64, 1, 256):
        part(f"step_batch_{batch_size}", lambda b=batch_size: dict(zip(
            ("rows", "graph_nodes", "top_kernels"), step_table(b, args.steps if b == 64 else args.steps // 2,
                                                VARIANTS if b == 64 else VARIANTS[-2:]))))
    part("epochs", lambda: epochs(args.data_dir, tempfile.mkdtemp()))
    with open(os.path.join(args.out, "gpu_report.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)

    print(json.dumps(report.get("environment"), default=str))
    for batch_size in (64, 1, 256):
        table = report.get(f"step_batch_{batch_size}", {})
        if "rows" not in table:
            continue
        torch_ms = next(r["median_ms"] for r in table["rows"] if r["name"].startswith("PyTorch eager (defaults"))
        print(f"\nbatch {batch_size}; graph nodes {table['graph_nodes']}")
        print("| step | median ms (min-max) | / PyTorch eager | kernels + copies per step | GPU busy us |")
        print("|---|---|---|---|---|")
        for r in table["rows"]:
            print(f"| {r['name']} | {r['median_ms']:.3f} ({r['min_ms']:.3f}-{r['max_ms']:.3f}) | "
                  f"{r['median_ms'] / torch_ms:.2f} | {r['kernels']:.0f} + {r['copies']:.0f} | {r['gpu_busy_us']:.0f} |")
    for entry in report.get("step_batch_64", {}).get("top_kernels", []):
        print(f"  {entry['us_per_step']:7.1f} us/step  {entry['calls_per_step']:4.1f} calls  {entry['kernel']}")
    if "eager" in report.get("epochs", {}):
        for label, result in report["epochs"].items():
            print(f"epoch ({label}): {result['epoch_seconds']} s; test MSE {result['test']['mse_denoised']:.5f}")


if __name__ == "__main__":
    main()
