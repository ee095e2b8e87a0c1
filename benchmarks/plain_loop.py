"""A user's plain loop (zero_grad, forward, backward, step; nothing else): minidae beside PyTorch, alternating.

    python benchmarks/plain_loop.py [BATCH]                         # as a user's loop runs
    MINIDAE_NO_MALLOPT=1 python benchmarks/plain_loop.py [BATCH]    # without minidae's allocator setting

Unlike step_time.py, it calls nothing a user would not (no backend.tune_host_allocator): what it measures is
what minidae arranges for itself. Both frameworks use 2 threads.
"""
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from minidae import backend, models, nn, optim
from torch_reference import TorchConvDAE
torch.set_num_threads(2)
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
backend.use("numpy", seed_value=0)
net = models.conv_dae(); opt = optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5); crit = nn.MSELoss()
rng = np.random.default_rng(0)
clean = rng.uniform(size=(batch, 1, 28, 28)).astype(np.float32); noisy = np.clip(clean + 0.5 * rng.normal(size=clean.shape), 0, 1).astype(np.float32)
tnet = TorchConvDAE(); topt = torch.optim.Adam(tnet.parameters(), lr=1e-3, weight_decay=1e-5)
tn, tc = torch.from_numpy(noisy), torch.from_numpy(clean)
def ours():
    opt.zero_grad(); crit(net(noisy), clean); net.backward(crit.backward()); opt.step()
def theirs():
    topt.zero_grad(); loss = torch.nn.functional.mse_loss(tnet(tn), tc); loss.backward(); topt.step()
times = {"minidae": [], "torch": []}
for f in (ours, theirs):
    for _ in range(5): f()
for _ in range(10):
    for name, f in (("minidae", ours), ("torch", theirs)):
        for _ in range(8):
            t = time.perf_counter(); f(); times[name].append(time.perf_counter() - t)
m, t = statistics.median(times["minidae"]), statistics.median(times["torch"])
print(f"batch {batch} allocator tuned {backend.HOST_ALLOCATOR_TUNED}: minidae {m*1e3:.2f} ms, PyTorch {t*1e3:.2f} ms, ratio {m/t:.2f}")
