"""What a debugger walks through: the Python functions entered, and the lines executed, from the loss's backward
to the end of the spec model's backward (conv1.weight.grad written), grouped by where they live.

    python benchmarks/debugger_path.py            # speed devices on (the default)
    python benchmarks/debugger_path.py --plain    # the plain maths only (core functions)

"maths" is minidae/nn/functional.py, nn/im2col.py and the core GEMMs of backend.py; "speed devices" minidae/speed/;
"machinery" minidae/nn/module.py and containers.py; "model" minidae/models.py; "library" NumPy and the standard
library (functions written in Python only: C functions are not entered by a debugger).
"""
import argparse
import collections
import contextlib
import os
import sys

import numpy

import minidae
from minidae import backend, models, nn, speed


def group(filename):
    path = filename.replace(os.sep, "/")
    if "/minidae/speed/" in path:
        return "speed devices"
    if path.endswith(("minidae/nn/functional.py", "minidae/nn/im2col.py", "minidae/backend.py")):
        return "maths"
    if path.endswith(("minidae/nn/module.py", "minidae/nn/containers.py", "minidae/nn/parameter.py")):
        return "machinery"
    if "/minidae/" in path:
        return "layers and model" if "/minidae/nn/" in path or path.endswith("models.py") else "other minidae"
    return "library"


def plain_maths():
    """The switch that runs the core functions only, in whichever form this version has."""
    if hasattr(minidae, "plain_maths"):
        return minidae.plain_maths()
    return speed.disabled()


def trace(run):
    """(functions entered, lines executed) by group while ``run()`` runs."""
    calls, lines = collections.Counter(), collections.Counter()

    def tracer(frame, event, arg):
        if event == "call":
            calls[group(frame.f_code.co_filename)] += 1
        elif event == "line":
            lines[group(frame.f_code.co_filename)] += 1
        return tracer

    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(None)
    return calls, lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", action="store_true", help="run the plain maths (core functions only)")
    args = parser.parse_args()
    backend.use("numpy", seed_value=0)
    model, criterion = models.conv_dae(), nn.MSELoss()
    x = backend.rng().random((64, 1, 28, 28), dtype=numpy.float32)
    forward = lambda: criterion(model(x), x)  # noqa: E731
    with plain_maths() if args.plain else contextlib.nullcontext():
        forward()
        model.backward(criterion.backward())  # warm up (speed devices load on first use)
        forward_counts = trace(forward)
        calls, lines = trace(lambda: model.backward(criterion.backward()))
    print(f"speed devices {'off (plain maths)' if args.plain else 'on'}: the spec model's backward, from the "
          f"loss's backward to conv1.weight.grad (the model, its 16 layers and the loss: 18 module calls)")
    print(f"{'where':<18} {'functions entered':>18} {'lines executed':>15}")
    for key in sorted(calls, key=lambda k: -calls[k]):
        print(f"{key:<18} {calls[key]:>18} {lines[key]:>15}")
    print(f"{'total':<18} {sum(calls.values()):>18} {sum(lines.values()):>15}")
    print(f"machinery lines executed per module call: backward {lines['machinery'] / 18:.1f}, forward "
          f"{forward_counts[1]['machinery'] / 18:.1f}")


if __name__ == "__main__":
    main()
