"""minidae beside PyTorch on the CPU, every row issue 10 tracks, each framework timed in its own processes:

    python benchmarks/bench.py [--threads 2] [--processes 4] [--steps 200] [--warmup 30]
                               [--rows spec_b64,fc_ae] [--json OUT.json] [--gemm-floor] [--epochs N --runs R]

The rows (``--rows`` takes a comma-separated subset of these names):
  spec_b1, spec_b64, spec_b256   a user's plain training step of the spec network (conv_dae, docs/spec.md) at
                                 batch 1, 64 and 256: zero_grad, forward, MSE loss, backward, Adam step (the
                                 spec preset's lr and weight decay); nothing else
  spec_inference_b1000           the spec network's forward at batch 1,000, in eval mode under no_grad
  fc_dae, dense_ae, fc_ae,       the same plain training step of each other zoo model at its preset's batch size,
  conv_ae_pool, conv_denoiser    with the preset's optimiser (Adam or SGD: lr, momentum, weight decay) and loss

The two steps. minidae: ``opt.zero_grad(); criterion(model(noisy), clean); model.backward(criterion.backward(),
input_grad=False); opt.step()``; ``input_grad=False``, as minidae's trainer does, skips dL/d(input) of the first
layer, which PyTorch does not compute either (the input does not require grad). PyTorch: the model's twin from
torch_reference.TWINS, ``opt.zero_grad(); loss_fn(model(noisy), clean).backward(); opt.step()``, its optimiser
from torch_reference.torch_optimizer with the same settings. Both zero_grads leave the gradients None. Both start
from the same weights, minidae's initialisation for seed 0, which this process writes to a .npz file in a
temporary directory, and both take the same batch (uniform "clean" images, Gaussian noise of 0.5, clipped;
float32), from a .npz file there too, every step. Otherwise each framework runs at its defaults (minidae flushes
the tiny values its optimisers write, PyTorch's set_flush_denormal is off: fresh weights hold no subnormals).

How. For each row this process starts child processes of this file, one after the other, alternating minidae,
PyTorch, minidae, PyTorch, ... ``--processes`` of each. A child imports only the framework it measures (the
minidae child never imports torch; the PyTorch child imports torch, NumPy and torch_reference's twins, not
minidae; the JSON records what each process had imported), builds the model, loads the weights and the batch,
takes ``--warmup`` steps, then times ``--steps`` steps one by one (time.perf_counter around each) and reports their
median (and quartiles). A row's time for a framework is the median of its processes' medians, its spread the
lowest and highest of them; the ratio is minidae's median over PyTorch's. So neither framework's thread pool
competes with the other's, and a change in the machine's load between processes shows as spread.

Threads: every child runs with OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS set to ``--threads``, and
the PyTorch child calls torch.set_num_threads with it; ``--threads 0`` leaves every library at its default. The
header names the CPU, NumPy's BLAS and the kernel it picked and its threads (threadpoolctl, in a minidae child),
torch's version and threads (in a PyTorch child), and the settings of the run.

``--gemm-floor`` adds a column: the GEMMs of one minidae step, each timed alone on NumPy's BLAS with the very
operands the step gave it, summed (and their GFLOP), after the timed steps of each minidae child: the time the
step cannot go below without faster GEMMs. ``--epochs N`` (0, the default: none) adds the whole trainer:
``minidae train`` (spec preset) and benchmarks/torch_reference.py as child processes, alternating, ``--runs``
times each for N epochs (data pipeline and test evaluation included): the median epoch time (from each run's
metrics.json) and the peak resident memory of each run (its rusage); ``--no-steps`` runs only these.

Only the standard library is imported at the top of this file: the parent process imports minidae (for the
presets, the weights and the batch) and never torch; each child imports its own framework.
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
import types

HERE = os.path.dirname(os.path.abspath(__file__))
FRAMEWORKS = ("minidae", "torch")          # the order of the processes of a row: minidae first
SHOWN = {"minidae": "minidae", "torch": "PyTorch"}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------- the rows

def all_rows():
    """{name: row}: every row's label, model, batch size, whether it is inference, and its preset's optimiser
    settings and loss (the spec rows take the spec preset's)."""
    from minidae.presets import PRESETS

    def row(label, preset_name, batch_size, inference=False):
        preset = PRESETS[preset_name]
        return {"label": label, "model": preset["model"], "batch_size": batch_size, "inference": inference,
                "optimizer": {key: preset[key] for key in ("optimizer", "lr", "momentum", "weight_decay")},
                "loss": preset["loss"]}
    rows = {f"spec_b{size}": row(f"spec step, batch {size}", "conv_dae", size) for size in (1, 64, 256)}
    rows["spec_inference_b1000"] = row("spec inference, batch 1,000", "conv_dae", 1000, inference=True)
    for name, preset in PRESETS.items():
        if name != "conv_dae":
            rows[name] = row(f"{name} step, batch {preset['batch_size']}", name, preset["batch_size"])
    return rows


def chosen_rows(names):
    """The rows named in ``names`` (comma-separated; None: all), in the table's order."""
    rows = all_rows()
    if names is None:
        return rows
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in rows]
    if unknown:
        raise SystemExit(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(rows)}")
    return {name: row for name, row in rows.items() if name in wanted}


def write_inputs(row, directory):
    """(weights path, batch path): minidae's initial weights of the row's model for seed 0 and the row's batch,
    as .npz files in ``directory``, which both frameworks' processes load."""
    import numpy as np
    from minidae import backend, models
    backend.use("numpy", seed_value=0)
    weights = os.path.join(directory, f"weights_{row['model']}.npz")
    np.savez(weights, **models.build(row["model"]).state_dict())
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(row["batch_size"], 1, 28, 28)).astype(np.float32)
    noisy = np.clip(clean + 0.5 * rng.normal(size=clean.shape), 0, 1).astype(np.float32)
    batch = os.path.join(directory, f"batch_{row['batch_size']}.npz")
    np.savez(batch, noisy=noisy, clean=clean)
    return weights, batch


# ---------------------------------------------------------------- in a child process: one framework's step

def minidae_step(spec):
    """(step, environment) of minidae for the row ``spec``. Imports minidae and NumPy, not torch."""
    import numpy as np
    from minidae import backend, models, no_grad, train
    backend.use("numpy", seed_value=0)
    model = models.build(spec["model"])
    model.load_state_dict(dict(np.load(spec["weights"])))
    with np.load(spec["batch"]) as batch:
        noisy, clean = batch["noisy"], batch["clean"]
    environment = {"numpy": np.__version__, "blas": blas(), "allocator_tuned": backend.HOST_ALLOCATOR_TUNED}
    if spec["inference"]:
        model.eval()

        def infer():
            with no_grad():
                model(noisy)
        return infer, environment
    optimizer = train.make_optimizer(types.SimpleNamespace(**spec["optimizer"]), model.parameters())
    criterion = train.LOSSES[spec["loss"]]()

    def step():
        optimizer.zero_grad()
        criterion(model(noisy), clean)
        model.backward(criterion.backward(), input_grad=False)  # nobody needs dL/d(noisy)
        optimizer.step()
    return step, environment


def torch_step(spec):
    """(step, environment) of the PyTorch twin for the row ``spec``. Imports torch, NumPy and torch_reference's
    twins, not minidae."""
    import numpy as np
    import torch
    sys.path.insert(0, HERE)
    from torch_reference import TWINS, torch_optimizer
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    model = TWINS[spec["model"]]()
    with np.load(spec["weights"]) as weights:
        model.load_state_dict({key: torch.from_numpy(weights[key]) for key in weights.files})
    with np.load(spec["batch"]) as batch:
        noisy, clean = torch.from_numpy(batch["noisy"]), torch.from_numpy(batch["clean"])
    environment = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                   "interop_threads": torch.get_num_interop_threads(), "numpy": np.__version__}
    if spec["inference"]:
        model.eval()

        def infer():
            with torch.no_grad():
                model(noisy)
        return infer, environment
    optimizer = torch_optimizer(types.SimpleNamespace(**spec["optimizer"]), model.parameters())
    loss_fn = {"mse": torch.nn.functional.mse_loss, "bce": torch.nn.functional.binary_cross_entropy}[spec["loss"]]

    def step():
        optimizer.zero_grad()
        loss_fn(model(noisy), clean).backward()
        optimizer.step()
    return step, environment


def time_steps(step, steps, warmup):
    """Seconds of each of ``steps`` calls of ``step``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def gemm_floor(step, repeats=20):
    """The GEMMs of one minidae step, each timed alone on NumPy's BLAS with the very operands (shapes and
    memory layouts) the step gave it, summed: the time the step cannot go below without faster GEMMs.
    Returns (milliseconds, GFLOP)."""
    from minidae import backend
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
        total += statistics.median(time_steps(lambda: original(a, b), repeats, 0))
        flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
    return total * 1e3, flops / 1e9


def child(framework, spec_path, out_path):
    """The body of a child process: time one framework's step of one row, write the result as JSON."""
    with open(spec_path) as f:
        spec = json.load(f)
    step, environment = {"minidae": minidae_step, "torch": torch_step}[framework](spec)
    times = sorted(time_steps(step, spec["steps"], spec["warmup"]))
    quartiles = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    result = {"pid": os.getpid(), "steps": len(times), "median_ms": quartiles[1] * 1e3,
              "q1_ms": quartiles[0] * 1e3, "q3_ms": quartiles[2] * 1e3,
              "imported": {name: name in sys.modules for name in FRAMEWORKS}, "environment": environment}
    if framework == "minidae" and spec["gemm_floor"]:
        result["gemm_floor_ms"], result["gemm_gflop"] = gemm_floor(step)
    with open(out_path, "w") as f:
        json.dump(result, f)


# ---------------------------------------------------------------- in the parent: processes, table, JSON

def child_environment(threads):
    """os.environ with every thread count set to ``threads`` (unchanged for 0)."""
    environment = dict(os.environ)
    if threads:
        environment.update({name: str(threads) for name in THREAD_VARIABLES})
    return environment


def run_child(framework, spec_path, directory, threads):
    """Start one child process for ``framework`` on the row in ``spec_path``; its result."""
    out = os.path.join(directory, f"result_{framework}.json")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", framework, spec_path, out],
                          env=child_environment(threads))
    if done.returncode:
        raise SystemExit(f"the {SHOWN[framework]} process of {spec_path} failed with exit status {done.returncode}")
    with open(out) as f:
        return json.load(f)


def measure_row(name, row, args, directory):
    """{framework: [each process's result]} for one row, the processes alternating between the frameworks."""
    weights, batch = write_inputs(row, directory)
    spec = dict(row, row=name, weights=weights, batch=batch, steps=args.steps, warmup=args.warmup,
                threads=args.threads, gemm_floor=args.gemm_floor)
    spec_path = os.path.join(directory, f"row_{name}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    processes = {framework: [] for framework in FRAMEWORKS}
    for _ in range(args.processes):
        for framework in FRAMEWORKS:
            processes[framework].append(run_child(framework, spec_path, directory, args.threads))
    return processes


def summary(processes):
    """The median and the spread (min, max) of the processes' medians, with the processes themselves."""
    medians = [process["median_ms"] for process in processes]
    return {"median_ms": statistics.median(medians), "min_ms": min(medians), "max_ms": max(medians),
            "processes": processes}


def row_result(name, row, processes):
    """A row's entry of the JSON: its settings, each framework's summary, and the ratio."""
    result = {"row": name, **{key: row[key] for key in ("label", "model", "batch_size", "inference")}}
    for framework in FRAMEWORKS:
        result[framework] = summary(processes[framework])
    result["ratio"] = result["minidae"]["median_ms"] / result["torch"]["median_ms"]
    floors = [process["gemm_floor_ms"] for process in processes["minidae"] if "gemm_floor_ms" in process]
    if floors:
        result["gemm_floor_ms"] = statistics.median(floors)
        result["gemm_gflop"] = processes["minidae"][0]["gemm_gflop"]
    return result


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def blas():
    """NumPy's BLAS libraries as threadpoolctl sees them: name, version, kernel, threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, {i.get('num_threads')} "
                     f"threads)" for i in threadpool_info() if i.get("user_api") == "blas")


def header(args, environments):
    """The run's environment: the machine, the settings, and each framework's as its first process saw it."""
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads or "library defaults",
            "processes": args.processes, "steps": args.steps, "warmup": args.warmup, **environments}


def print_header(environment):
    minidae, torch = environment.get("minidae", {}), environment.get("torch", {})
    print(f"CPU: {environment['cpu']} ({environment['cpus']} logical CPUs); Python {environment['python']}; "
          f"{environment['date']}")
    if minidae:
        print(f"minidae: NumPy {minidae['numpy']}, BLAS {minidae['blas']}; allocator tuned: "
              f"{minidae['allocator_tuned']}")
    if torch:
        print(f"PyTorch: {torch['torch']}, {torch['threads']} threads ({torch['interop_threads']} inter-op)")
    threads = environment["threads"]
    if threads != "library defaults":
        threads = (f"{threads} ({', '.join(THREAD_VARIABLES)}={threads} in every process; "
                   f"torch.set_num_threads({threads}))")
    print(f"threads: {threads}", flush=True)
    if not (minidae or torch):
        return
    print(f"each row: {environment['processes']} processes of each framework, alternating; in each, the median of "
          f"{environment['steps']} steps after {environment['warmup']} warm-up steps; shown: the median of the "
          f"processes' medians (lowest-highest)", flush=True)


def print_table_head(gemm_floor):
    columns = ["row", "minidae (ms)", "PyTorch (ms)", "minidae / PyTorch"]
    columns += ["minidae's GEMMs alone (ms; GFLOP)"] if gemm_floor else []
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns), flush=True)


def print_row(result):
    def cell(summary):
        return f"{summary['median_ms']:.2f} ({summary['min_ms']:.2f}-{summary['max_ms']:.2f})"
    cells = [result["label"], cell(result["minidae"]), cell(result["torch"]), f"{result['ratio']:.2f}"]
    if "gemm_floor_ms" in result:
        cells.append(f"{result['gemm_floor_ms']:.2f}; {result['gemm_gflop']:.3f}")
    print("| " + " | ".join(cells) + " |", flush=True)


def step_rows(args):
    """Measure, print and return (environment, row results) of every chosen row."""
    environment, results = None, []
    with tempfile.TemporaryDirectory(prefix="minidae-bench-") as directory:
        for name, row in chosen_rows(args.rows).items():
            processes = measure_row(name, row, args, directory)
            if environment is None:  # the first processes of each framework name its libraries
                environment = header(args, {framework: processes[framework][0]["environment"]
                                            for framework in FRAMEWORKS})
                print_header(environment)
                print_table_head(args.gemm_floor)
            for framework in FRAMEWORKS:
                for process in processes[framework]:
                    del process["environment"]
            results.append(row_result(name, row, processes))
            print_row(results[-1])
    return environment, results


# ---------------------------------------------------------------- the whole trainer (--epochs)

# Runs a command and writes its peak RSS (KiB) to a file. The trainers are started through it, not straight
# from this process: Linux carries a process's peak RSS across fork and exec, so a child of this process
# would report at least this process's size.
_PEAK_RSS = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL); "
             "_, status, usage = os.wait4(child.pid, 0); open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); "
             "sys.exit(os.waitstatus_to_exitcode(status))")


def trainer_runs(epochs, runs, threads):
    """[(median epoch s, peak RSS MiB)] for minidae's trainer and the PyTorch reference, each run as
    a child process ``runs`` times, alternating."""
    commands = [[sys.executable, "-m", "minidae", "train", "--preset", "conv_dae", "--no-progress"],
                [sys.executable, os.path.join(HERE, "torch_reference.py"), "--preset", "conv_dae",
                 "--eval-every", str(epochs)] + (["--threads", str(threads)] if threads else [])]
    epochs_s, peaks = [[], []], [[], []]
    for _ in range(runs):
        for index, command in enumerate(commands):
            with tempfile.TemporaryDirectory() as out:
                peak = os.path.join(out, "peak_rss")
                done = subprocess.run([sys.executable, "-c", _PEAK_RSS, peak, *command, "--epochs", str(epochs),
                                       "--out", out], env=child_environment(threads))
                if done.returncode:
                    raise SystemExit(f"{' '.join(command)} failed with exit status {done.returncode}")
                with open(os.path.join(out, "metrics.json")) as f:
                    epochs_s[index] += json.load(f)["epoch_seconds"]
                with open(peak) as f:
                    peaks[index].append(int(f.read()) / 1024)  # KiB on Linux
    return [(statistics.median(e), max(p)) for e, p in zip(epochs_s, peaks)]


def trainer_rows(args, printed_table):
    """Measure, print and return the trainer's rows (epoch time, peak RSS)."""
    (ours_epoch, ours_rss), (theirs_epoch, theirs_rss) = trainer_runs(args.epochs, args.runs, args.threads)
    if not printed_table:
        print_table_head(False)
    results = []
    for label, ours, theirs, unit in ((f"trainer epoch (s), median of {args.runs} x {args.epochs}", ours_epoch,
                                       theirs_epoch, "s"),
                                      (f"peak RSS of a {args.epochs}-epoch run (MiB)", ours_rss, theirs_rss, "MiB")):
        results.append({"row": label, "minidae": ours, "torch": theirs, "unit": unit, "ratio": ours / theirs})
        print(f"| {label} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} |", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="threads of every library in every process "
                        "(0: each library's default)")
    parser.add_argument("--processes", type=int, default=4, help="processes of each framework per row")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps before them")
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the results, every process's, here")
    parser.add_argument("--gemm-floor", action="store_true", help="add the column of minidae's GEMMs alone")
    parser.add_argument("--epochs", type=int, default=0, help="epochs per trainer run (0: no trainer rows)")
    parser.add_argument("--runs", type=int, default=2, help="trainer runs of each framework")
    parser.add_argument("--no-steps", action="store_true", help="only the trainer rows")
    args = parser.parse_args(argv)
    if args.processes < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--processes and --steps must be at least 1, --warmup at least 0")
    environment, results = step_rows(args) if not args.no_steps else (None, [])
    if environment is None:
        environment = header(args, {})
        print_header(environment)
    trainer = trainer_rows(args, printed_table=bool(results)) if args.epochs else []
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment, "rows": results, "trainer": trainer}, f, indent=2)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:])
    else:
        main()
