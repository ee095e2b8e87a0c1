"""Adam's flat replacement with and without its cache-sized blocks, on flat arrays of three models' sizes.

    python benchmarks/adam_blocks.py

The same ``minidae.speed.cpu._adam`` lines run over the whole flat arrays at once, or a block of
``cpu.BLOCK`` elements at a time (what ``cpu.adam_step`` does); the rounds alternate and the medians are
printed. The results are the same bit for bit (tests/test_speed.py).
"""
import statistics
import time

import numpy as np

from minidae.speed import cpu

SIZES = {"dense_ae": 222_384, "conv_dae (spec)": 572_097, "fc_dae": 1_132_944}


def main():
    rng = np.random.default_rng(0)
    hyper = (1e-3, (0.9, 0.999), 1e-8, 1e-5, False)
    for name, n in SIZES.items():
        p, m = rng.normal(size=n).astype(np.float32) * 0.05, rng.normal(size=n).astype(np.float32) * 1e-4
        g, v = rng.normal(size=n).astype(np.float32) * 1e-3, np.abs(rng.normal(size=n)).astype(np.float32) * 1e-6
        s1, s2 = np.empty_like(p), np.empty_like(p)

        def whole():
            cpu._adam(p, g, m, v, 5, *hyper, s1, s2)

        def blocks():
            for i in range(0, n, cpu.BLOCK):
                j = min(n, i + cpu.BLOCK)
                cpu._adam(p[i:j], g[i:j], m[i:j], v[i:j], 5, *hyper, s1[i:j], s2[i:j])
        times = {"whole arrays": [], f"blocks of {cpu.BLOCK}": []}
        for _ in range(5):
            for label, run in zip(times, (whole, blocks)):
                for _ in range(3):
                    run()
                start = time.perf_counter()
                for _ in range(20):
                    run()
                times[label].append((time.perf_counter() - start) / 20 * 1e3)
        print(f"{name:<16} {n:>9,} parameters: " + ", ".join(f"{k} {statistics.median(t):.2f} ms"
                                                             for k, t in times.items()))


if __name__ == "__main__":
    main()
