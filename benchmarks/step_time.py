"""Median time of one training step of the spec network (forward, backward, Adam) at batch 64,
minidae next to PyTorch, in the same process with the same thread count.

    python benchmarks/step_time.py [--batch-size 64] [--steps 50] [--backend numpy|cupy] [--threads N]
"""
import argparse
import statistics
import time

import numpy as np


def median_step_seconds(runners, steps, rounds=10):
    """Median seconds per step of each (step, sync) runner, measured in alternating rounds
    so that both frameworks see the same machine load."""
    times = [[] for _ in runners]
    for step, sync in runners:
        for _ in range(5):
            step()
        sync()
    for _ in range(rounds):
        for (step, sync), bucket in zip(runners, times):
            for _ in range(max(1, steps // rounds)):
                start = time.perf_counter()
                step()
                sync()
                bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def minidae_step(batch_size, backend_name):
    from minidae import backend, models, nn, optim
    backend.use(backend_name, seed_value=0)
    xp = backend.xp
    net = models.conv_dae()
    opt = optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    criterion = nn.MSELoss()
    clean = xp.asarray(np.random.default_rng(0).uniform(size=(batch_size, 1, 28, 28)).astype(np.float32))
    noisy = xp.clip(clean + 0.5 * xp.asarray(np.random.default_rng(1).normal(size=clean.shape), dtype=xp.float32), 0, 1)

    def step():
        opt.zero_grad()
        criterion(net(noisy), clean)
        net.backward(criterion.backward())
        opt.step()
    sync = xp.cuda.Stream.null.synchronize if backend_name == "cupy" else (lambda: None)
    return step, sync


def torch_step(batch_size, device):
    import torch
    from torch_reference import TorchConvDAE
    net = TorchConvDAE().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    clean = torch.rand(batch_size, 1, 28, 28, device=device)
    noisy = (clean + 0.5 * torch.randn_like(clean)).clamp(0, 1)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(noisy), clean)
        loss.backward()
        opt.step()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return step, sync


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
    device = "cuda" if args.backend == "cupy" else "cpu"
    ours, theirs = median_step_seconds([minidae_step(args.batch_size, args.backend),
                                        torch_step(args.batch_size, device)], args.steps)
    print(f"batch {args.batch_size}, {args.steps} steps, torch threads {torch.get_num_threads()}, "
          f"backend {args.backend} / torch {device} {torch.__version__}, numpy {np.__version__}, "
          f"allocator tuned: {tuned}")
    print(f"minidae median step: {ours * 1e3:.2f} ms")
    print(f"PyTorch median step: {theirs * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
