"""The gradient checks need no PyTorch: with torch hidden, they run and the parity tests skip with the reason."""
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_gradchecks_run_and_parity_tests_skip_without_torch():
    env = dict(os.environ, MINIDAE_HIDE_TORCH="1")
    files = ["tests/nn/test_layers.py", "tests/nn/test_conv.py", "tests/nn/test_surface.py", "tests/nn/test_loss.py",
             "tests/nn/test_semantics.py", "tests/test_gradcheck.py", "tests/test_models.py",
             "tests/nn/test_normalization.py", "tests/nn/test_dropout.py"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not cupy",
                             "-rs", *files], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "failed" not in summary and "error" not in summary, summary
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 100, summary  # the gradchecks, shape and error tests ran
    assert "PyTorch is the reference for parity tests" in result.stdout  # parity tests skipped, saying why
