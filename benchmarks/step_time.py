"""Median time of one training step of the spec network (docs/spec.md; forward, backward, Adam), minidae
next to PyTorch, in the same process, alternating, with the same thread count.

    python benchmarks/step_time.py [--batch-size 64] [--steps 100] [--threads N]
    python benchmarks/step_time.py --backend cupy      # on a GPU: CuPy against PyTorch on CUDA

On the CPU each step is timed with the host clock. On a GPU the steps are timed with CUDA
events around blocks of steps, with no synchronisation between the steps of a block (a
per-step sync would add a host round trip that training does not have); after a warm-up, the
median per-step time over the blocks is reported, and the kernels each step launches are
counted with the CUDA profiler (PyTorch's, which sees CuPy's kernels too). minidae on CuPy
runs twice: eagerly, and with its step replayed as a CUDA graph (minidae.speed.cuda.GraphedStep).
"""
import argparse
import statistics
import time

import numpy as np


class Runner:
    """One framework's training step at one batch size: ``run()`` takes a step, ``sync()`` waits for it."""

    def __init__(self, name, run, sync, timer=None, before=None):
        self.name, self.run, self.sync = name, run, sync
        self.timer = timer          # CUDA event factory (``Event()`` with record/elapsed) or None on the CPU
        self.before = before or (lambda: None)  # settings to restore before each of its blocks
        self.times = []

    def block(self, steps):
        """Run ``steps`` steps; append the time per step of the block."""
        self.before()
        self.sync()
        if self.timer is None:
            for _ in range(steps):
                start = time.perf_counter()
                self.run()
                self.sync()
                self.times.append(time.perf_counter() - start)
            return
        start, end = self.timer()
        start()
        for _ in range(steps):
            self.run()
        seconds = end()
        self.times.append(seconds / steps)

    def median(self):
        return statistics.median(self.times)


def compare(runners, steps, rounds=10, warmup=5):
    """Median seconds per step of each runner, measured in alternating rounds (same machine load)."""
    for runner in runners:
        runner.before()
        for _ in range(warmup):
            runner.run()
        runner.sync()
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        for runner in runners:
            runner.block(per_round)
    return [runner.median() for runner in runners]


def cupy_timer():
    import cupy

    def timer():
        start, end = cupy.cuda.Event(), cupy.cuda.Event()

        def stop():
            end.record()
            end.synchronize()
            return cupy.cuda.get_elapsed_time(start, end) / 1e3
        return start.record, stop
    return timer


def torch_timer():
    import torch

    def timer():
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def stop():
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return start.record, stop
    return timer


def batch(batch_size, xp):
    clean = np.random.default_rng(0).uniform(size=(batch_size, 1, 28, 28)).astype(np.float32)
    noisy = np.clip(clean + 0.5 * np.random.default_rng(1).normal(size=clean.shape), 0, 1).astype(np.float32)
    return xp.asarray(noisy), xp.asarray(clean)


# The CuPy replacements (minidae.speed.cuda) by group, as the benchmarks switch them on one group at a time.
FAST_PATH_HOOKS = {"adam": ("adam_step", "zero_grads"), "im2col": ("im2col", "col2im"),
                   "fused": ("relu", "sigmoid", "sigmoid_backward", "mse_loss", "mse_loss_backward"),
                   "matmul": ("matmul", "matmul_add")}


def minidae_runner(batch_size, backend_name, graph=False, fast_paths=None, name=None):
    """minidae's step; on CuPy eager or replayed as a CUDA graph, with the given fast paths on."""
    from minidae import backend, models, nn, optim
    backend.use(backend_name, seed_value=0)
    net = models.conv_dae()
    opt = optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    criterion = nn.MSELoss()
    noisy, clean = batch(batch_size, backend.xp)

    def step(noisy, clean):
        opt.zero_grad()
        loss = criterion(net(noisy), clean)
        net.backward(criterion.backward())
        opt.step()
        return loss
    run = backend.graphed(step, net.parameters()) if graph else step
    if backend_name != "cupy":
        return Runner(name or "minidae", lambda: run(noisy, clean), lambda: None)
    import cupy
    from minidae import speed
    off = [hook for group, on in (fast_paths or {}).items() if not on for hook in FAST_PATH_HOOKS[group]]
    return Runner(name or f"minidae ({'CUDA graph' if graph else 'eager'})", lambda: run(noisy, clean),
                  cupy.cuda.get_current_stream().synchronize, cupy_timer(), before=lambda: speed.set_disabled(*off))


def torch_runner(batch_size, device, tf32=None, name=None):
    """PyTorch's eager step with its defaults (foreach Adam; on CUDA, cuDNN's TF32 convolutions unless tf32=False)."""
    import torch
    from torch_reference import TorchConvDAE
    torch.manual_seed(0)
    net = TorchConvDAE().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    noisy, clean = (torch.from_numpy(a).to(device) for a in batch(batch_size, np))
    default_tf32 = torch.backends.cudnn.allow_tf32

    def run():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(noisy), clean)
        loss.backward()
        opt.step()

    def before():
        torch.backends.cudnn.allow_tf32 = default_tf32 if tf32 is None else tf32
    if device != "cuda":
        return Runner(name or "PyTorch", run, lambda: None)
    return Runner(name or "PyTorch (eager)", run, torch.cuda.synchronize, torch_timer(), before=before)


def _torch_step_parts(batch_size, capturable=False):
    """(net, optimiser, noisy, clean) of PyTorch's spec network on CUDA, as torch_runner builds them."""
    import torch
    from torch_reference import TorchConvDAE
    torch.manual_seed(0)
    net = TorchConvDAE().cuda()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5, capturable=capturable)
    noisy, clean = (torch.from_numpy(a).cuda() for a in batch(batch_size, np))
    return net, opt, noisy, clean


def torch_graph_runner(batch_size, name="PyTorch, whole step as a CUDA graph"):
    """PyTorch's step (forward, backward, capturable Adam) captured once with torch.cuda.graph and replayed:
    the whole-network capture of PyTorch's CUDA graphs documentation."""
    import torch
    net, opt, noisy, clean = _torch_step_parts(batch_size, capturable=True)

    def step():
        loss = torch.nn.functional.mse_loss(net(noisy), clean)
        loss.backward()
        opt.step()
        return loss
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as the documentation asks
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    runner = Runner(name, graph.replay, torch.cuda.synchronize, torch_timer())
    runner.keep = (net, opt, noisy, clean)  # the graph holds their memory's addresses, not references to them
    return runner


def torch_compiled_runner(batch_size, mode=None, name=None):
    """PyTorch's eager step around ``torch.compile(model, mode=mode)`` (foreach Adam, not compiled); the
    compilation (the first steps) is timed apart and kept in ``runner.compile_seconds``."""
    import torch
    net, opt, noisy, clean = _torch_step_parts(batch_size)
    compiled = torch.compile(net, mode=mode)

    def run():
        opt.zero_grad()
        torch.nn.functional.mse_loss(compiled(noisy), clean).backward()
        opt.step()
    started = time.perf_counter()
    for _ in range(3):  # reduce-overhead records its graphs on the first calls
        run()
    torch.cuda.synchronize()
    runner = Runner(name or f"PyTorch, torch.compile(mode={mode!r})", run, torch.cuda.synchronize, torch_timer())
    runner.compile_seconds = time.perf_counter() - started
    return runner


def cuda_events(runner, steps):
    """The CUDA profiler's device events (kernels, memsets, copies) of ``steps`` steps of ``runner``."""
    from torch.profiler import ProfilerActivity, profile
    runner.before()
    runner.sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            runner.run()
        runner.sync()
    return [event for event in prof.events() if event.device_type.name == "CUDA"]


def kernels_per_step(runner, steps=5):
    """(kernels, memsets + memcpys, GPU busy microseconds) per step, from the CUDA profiler."""
    kernels = copies = 0
    busy = 0.0
    for event in cuda_events(runner, steps):
        if event.name.startswith(("Memcpy", "Memset")):
            copies += 1
        else:
            kernels += 1
        busy += event.time_range.elapsed_us()
    return kernels / steps, copies / steps, busy / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--no-tune-allocator", action="store_true",
                        help="leave glibc malloc at its defaults (see backend.tune_host_allocator)")
    args = parser.parse_args()
    from minidae import backend
    tuned = False if args.no_tune_allocator else backend.tune_host_allocator()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backend == "cupy":
        runners = [minidae_runner(args.batch_size, "cupy"), minidae_runner(args.batch_size, "cupy", graph=True),
                   torch_runner(args.batch_size, "cuda")]
        steps = max(args.steps, 200)
    else:
        runners = [minidae_runner(args.batch_size, "numpy"), torch_runner(args.batch_size, "cpu")]
        steps = args.steps
    medians = compare(runners, steps)
    device = torch.cuda.get_device_name() if args.backend == "cupy" else "cpu"
    print(f"batch {args.batch_size}, {steps} steps, torch threads {torch.get_num_threads()}, "
          f"backend {args.backend} / torch {torch.__version__} on {device}, numpy {np.__version__}, "
          f"allocator tuned: {tuned}")
    for runner, median in zip(runners, medians):
        line = f"{runner.name + ' median step:':<40}{median * 1e3:8.3f} ms"
        if args.backend == "cupy":
            kernels, copies, busy = kernels_per_step(runner)
            line += f"   {kernels:5.0f} kernels + {copies:3.0f} copies/memsets per step, GPU busy {busy:6.1f} us"
        print(line)


if __name__ == "__main__":
    main()
