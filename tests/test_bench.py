"""benchmarks/bench.py in its quickest mode: one small row, two processes of each framework, two steps each.
What is checked is the output's structure, never a timing: the table's row, positive numbers, per-process samples
of both frameworks in the JSON, and that each child imported only the framework it measures."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench.py"


def run_bench(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_rows_name_every_preset():
    import bench
    from minidae.presets import PRESETS
    rows = bench.all_rows()
    assert list(rows)[:4] == ["spec_b1", "spec_b64", "spec_b256", "spec_inference_b1000"]
    assert set(PRESETS) - {"conv_dae"} <= set(rows)
    for name, preset in PRESETS.items():
        if name != "conv_dae":
            assert rows[name]["batch_size"] == preset["batch_size"]
            assert rows[name]["optimizer"]["optimizer"] == preset["optimizer"]
    assert rows["spec_inference_b1000"]["inference"] and rows["spec_b64"]["batch_size"] == 64


def test_unknown_row_is_refused_with_the_choices():
    result = run_bench("--rows", "fc_ae,no_such_row")
    assert result.returncode != 0
    assert "no_such_row" in result.stderr and "spec_b64" in result.stderr


def test_quickest_run_table_and_json(tmp_path):
    pytest.importorskip("torch", reason="bench.py compares minidae with PyTorch: pip install -e .[test]")
    out = tmp_path / "bench.json"
    result = run_bench("--rows", "fc_ae", "--processes", "2", "--steps", "2", "--warmup", "1", "--threads", "1",
                       "--json", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout
    for needle in ("CPU:", "BLAS", "PyTorch: 2.", "threads: 1", "| row | minidae (ms) | PyTorch (ms) |"):
        assert needle in text, text

    line = next(line for line in text.splitlines() if line.startswith("| fc_ae step, batch 10 |"))
    numbers = [float(n) for n in re.findall(r"\d+\.\d+", line)]
    assert len(numbers) == 7 and all(n > 0 for n in numbers), line  # 2 x (median, min, max), ratio

    report = json.loads(out.read_text())
    assert report["environment"]["threads"] == 1 and report["environment"]["processes"] == 2
    assert report["environment"]["torch"]["threads"] == 1
    (row,) = report["rows"]
    assert row["row"] == "fc_ae" and row["batch_size"] == 10 and row["ratio"] > 0
    for framework, other in (("minidae", "torch"), ("torch", "minidae")):
        summary = row[framework]
        assert len(summary["processes"]) == 2
        assert summary["min_ms"] <= summary["median_ms"] <= summary["max_ms"]
        for process in summary["processes"]:
            assert process["steps"] == 2 and 0 < process["q1_ms"] <= process["median_ms"] <= process["q3_ms"]
            assert process["imported"] == {framework: True, other: False}, (framework, process)
    pids = [p["pid"] for framework in ("minidae", "torch") for p in row[framework]["processes"]]
    assert len(set(pids)) == 4  # four separate processes
    assert row["ratio"] == pytest.approx(row["minidae"]["median_ms"] / row["torch"]["median_ms"])


def test_subnormal_check_shows_a_users_loop_flushing_tiny_weights(tmp_path):
    """benchmarks/subnormal_check.py on a spec network whose weights hold tiny values (the state a long run
    leaves, shrunk here by hand): after 10 steps of a user's own Adam loop the flush has set every value below
    1e-30 to zero, and with the flush off they are still there. The timings are printed, not checked."""
    import numpy as np
    from minidae import backend, models
    backend.use("numpy", seed_value=0)
    state = {k: np.asarray(v) for k, v in models.conv_dae().state_dict().items()}
    state["l2.weight"][:100] = 1e-39   # dead units' weights, subnormal
    state["l2.weight"][100:200] = 1e-32  # tiny but normal: their products underflow
    weights = tmp_path / "tiny.npz"
    np.savez(weights, **state)
    script = ROOT / "benchmarks" / "subnormal_check.py"
    result = subprocess.run([sys.executable, str(script), str(weights), "--steps", "10", "--batch-size", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {line[:42].strip(): line[42:].split() for line in result.stdout.splitlines()[2:]}
    below = {name: int(values[1]) for name, values in rows.items()}
    assert below["fresh weights"] == 0
    assert below["trained weights"] == 200 * state["l2.weight"].shape[1]
    assert below["trained, then 10 Adam steps, flush on"] == 0
    assert below["trained, then 10 Adam steps, flush off"] > 0
