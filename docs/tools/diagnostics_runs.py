"""The runs docs/backprop.md ("Reading the diagnostics") shows: one healthy, two that are not.

    python docs/tools/diagnostics_runs.py [--epochs 1] [--out runs/diagnostics] [--images docs/images]

* ``healthy``: the specification's recipe (conv_dae, Adam 1e-3);
* ``lr0.1``: the same with a learning rate of 1e-1;
* ``sigmoid``: conv_dae with every ReLU replaced by a Sigmoid (the factory ``sigmoid_dae`` below, trained as a
  model of one's own: ``--model docs/tools/diagnostics_runs.py:sigmoid_dae``).

Each run trains on the full MNIST and writes its directory under ``--out``; the script copies each layers.png
to ``--images`` as diagnostics_<run>.png (in 256 colours) and prints the numbers the page quotes: the median update ratio over
the run's last five records, each parameter's gradient norm at the end, and each ReLU's fraction of zeros.
"""
import argparse
import os
import statistics

from PIL import Image

from minidae import models, nn
from minidae.train import TrainConfig, train


def sigmoid_dae():
    """conv_dae with a Sigmoid wherever the specification has a ReLU: the classic vanishing-gradient setup."""
    model = models.conv_dae()
    return models.Chain([(name.replace("relu", "sigmoid"), nn.Sigmoid()) if isinstance(layer, nn.ReLU) else
                         (name, layer) for name, layer in model.named_children()], model.code_after)


RUNS = {"healthy": {}, "lr0.1": {"lr": 1e-1},
        "sigmoid": {"model": f"{os.path.abspath(__file__)}:sigmoid_dae"}}


def describe(name, layers):
    last = lambda values: [v for v in values if v is not None][-5:]  # noqa: E731
    ratios = {k: statistics.median(last(v)) for k, v in layers["update_ratio"].items()}
    print(f"== {name}: median update ratio (last 5 records): "
          + ", ".join(f"{k} {v:.1e}" for k, v in ratios.items() if k.endswith("weight")))
    print("   gradient norm at the end: " + ", ".join(f"{k} {last(v)[-1]:.1e}" for k, v in
                                                      layers["gradient_norm"].items() if k.endswith("weight")))
    print("   output std at the end: " + ", ".join(f"{k} {last(s['std'])[-1]:.2g}"
                                                   for k, s in layers["output"].items()))
    print("   fraction of zeros at the end: " + ", ".join(f"{k} {last(s['zeros'])[-1]:.2f}"
                                                          for k, s in layers["output"].items()
                                                          if k.startswith("relu")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default="runs/diagnostics")
    parser.add_argument("--images", default="docs/images")
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    for name in args.runs:
        out = os.path.join(args.out, name)
        config = TrainConfig.from_preset("conv_dae", epochs=args.epochs, out=out, force=True, progress=False,
                                         **RUNS[name])
        try:
            result = train(config)
        except Exception as exc:  # a run that diverges is one of the things to show
            print(f"== {name}: {type(exc).__name__}: {exc}")
            continue
        print(f"== {name}: test MSE {result['test']['mse_denoised']:.5f}")
        describe(name, result["layers"])
        with Image.open(os.path.join(out, "layers.png")) as image:  # 256 colours: a quarter of the bytes
            image.convert("RGB").quantize(256).save(os.path.join(args.images, f"diagnostics_{name}.png"),
                                                    optimize=True)


if __name__ == "__main__":
    main()
