"""Shared fixtures: the backend grid and the PyTorch parity helper (defined in parity.py).

Every test that takes ``xp`` runs once per backend: NumPy always, CuPy where a GPU is
usable (skipped with the reason otherwise), so the same suite runs unchanged on a GPU box.
"""
import importlib.abc
import os
import sys

import pytest

if os.environ.get("MINIDAE_HIDE_TORCH"):  # tests/test_without_torch.py: behave as if torch were not installed
    class _HideTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by MINIDAE_HIDE_TORCH)", name=name)
            return None

    sys.meta_path.insert(0, _HideTorch())

from minidae import backend  # noqa: E402
from parity import REPLAY, WORST_ERRORS, assert_torch_parity  # noqa: E402

try:
    backend._load_cupy()
    CUPY_SKIP = None
except backend.BackendUnavailable as exc:
    CUPY_SKIP = str(exc)

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.skipif(CUPY_SKIP is not None, reason=f"{CUPY_SKIP}"))]


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module of each available backend, made active (and reseeded) for the test."""
    backend.use(request.param, seed_value=0)
    yield backend.xp
    backend.use("numpy", seed_value=0)


@pytest.fixture
def torch_parity():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for parity tests: pip install -e .[test]")
    torch.manual_seed(0)
    return assert_torch_parity


def pytest_terminal_summary(terminalreporter):
    if REPLAY:
        terminalreporter.section("PyTorch's own test cases (torch/testing/_internal), float64")
        terminalreporter.write_line(f"{'layer':<20}{'cases':>6}{'passed':>8}{'skipped':>9}  skip reasons")
        for layer, counts in sorted(REPLAY.items()):
            reasons = {k: v for k, v in counts.items() if k not in ("cases", "passed")}
            skipped = sum(reasons.values())
            terminalreporter.write_line(f"{layer:<20}{counts['cases']:>6}{counts['passed']:>8}{skipped:>9}  "
                                        + "; ".join(f"{k} ({v})" for k, v in reasons.items()))
    if WORST_ERRORS:
        terminalreporter.section("worst relative error against PyTorch")
        for (layer, dtype), error in sorted(WORST_ERRORS.items()):
            terminalreporter.write_line(f"{layer:<24} {dtype:<8} {error:.2e}")


@pytest.fixture(scope="session")
def mnist_root():
    """The real MNIST in the user cache (fetched once, verified); skips when no source is reachable."""
    from minidae.data import DatasetUnavailable, datasets
    try:
        datasets.fetch("mnist", progress=False)
    except DatasetUnavailable as exc:
        pytest.skip(f"MNIST is not available on this machine: {exc}")
    return str(datasets.data_root())
