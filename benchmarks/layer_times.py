"""Each layer's forward and backward time for a trained checkpoint beside a fresh model, with subnormal counts.

    python benchmarks/layer_times.py CHECKPOINT [--batch-size 64] [--flush 1e-30 ...]

For a Chain model (the presets): one batch of noisy MNIST training images goes through ``model.layers`` one
layer at a time, five times, and the median time of each layer's forward and backward is printed with the
number of subnormal floats (nonzero, below the dtype's smallest normal number) in its output. ``--flush T``
also times the whole forward and backward after setting every weight below T in magnitude to zero
(docs/performance.md, "Subnormal weights slow long runs on Intel CPUs").
"""
import argparse
import time

import numpy as np

from minidae import backend, models, nn
from minidae.checkpoint import load_checkpoint
from minidae.data import load_mnist


def subnormal(a):
    return int(((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)).sum())


def per_layer(model, noisy, clean, repeats=5):
    criterion, forward, backward = nn.MSELoss(), {}, {}
    for _ in range(repeats):
        h, counts = noisy, []
        for i, layer in enumerate(model.layers):
            start = time.perf_counter()
            h = layer(h)
            forward.setdefault(i, []).append(time.perf_counter() - start)
            counts.append(subnormal(h))
        criterion(h, clean)
        g = criterion.backward()
        for i in reversed(range(len(model.layers))):
            start = time.perf_counter()
            g = model.layers[i].backward(g)
            backward.setdefault(i, []).append(time.perf_counter() - start)
    return [(np.median(forward[i]) * 1e3, np.median(backward[i]) * 1e3, counts[i]) for i in range(len(model.layers))]


def whole(model, noisy, clean, repeats=8):
    criterion, times = nn.MSELoss(), []
    for _ in range(repeats):
        start = time.perf_counter()
        criterion(model(noisy), clean)
        model.backward(criterion.backward())
        times.append(time.perf_counter() - start)
    return np.median(times[2:]) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--flush", type=float, nargs="*", default=[])
    args = parser.parse_args()
    backend.use("numpy", seed_value=0)
    state = load_checkpoint(args.checkpoint)
    name = state["config"].get("model", "conv_dae")
    clean = load_mnist("train", progress=False)[0][:args.batch_size, None].astype(np.float32) / 255
    noisy = np.clip(clean + 0.5 * np.random.default_rng(0).normal(size=clean.shape), 0, 1).astype(np.float32)

    def trained():
        model = models.build(name)
        model.load_state_dict(state["model"])
        return model
    model, fresh = trained(), models.build(name)
    names = {id(m): n for n, m in model.named_modules() if n}
    print(f"{'layer':<12}{'fresh fwd':>10}{'fresh bwd':>10}{'trained fwd':>12}{'trained bwd':>12}  subnormal outputs")
    for layer, a, b in zip(model.layers, per_layer(fresh, noisy, clean), per_layer(model, noisy, clean)):
        print(f"{names.get(id(layer), type(layer).__name__):<12}{a[0]:>10.2f}{a[1]:>10.2f}{b[0]:>12.2f}{b[1]:>12.2f}"
              f"  {b[2]}")
    for key, p in model.named_parameters():
        if subnormal(p.data):
            print(f"{key}: {subnormal(p.data)} of {p.data.size} weights subnormal")
    print(f"forward and backward: fresh {whole(fresh, noisy, clean):.1f} ms, trained {whole(model, noisy, clean):.1f} ms")
    for threshold in args.flush:
        flushed = trained()
        for p in flushed.parameters():
            p.data[np.abs(p.data) < threshold] = 0
        print(f"weights below {threshold:.1e} set to zero: {whole(flushed, noisy, clean):.1f} ms")


if __name__ == "__main__":
    main()
