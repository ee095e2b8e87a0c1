"""Per-layer training diagnostics: what backprop is doing inside the network, recorded as it trains.

Every ``every`` iterations (25 by default: the trainer reads the losses back at that cadence anyway) a
:class:`Diagnostics` records

* for every parameter tensor, the norm of its gradient and the update-to-weight ratio ‖Δw‖ / ‖w‖ of the step
  just taken (from a copy of the weights made before that step);
* for every layer, the mean, the standard deviation and the fraction of exact zeros of its output (dead ReLU
  units show as zeros near 1), from a forward of the first 16 images of the batch just trained, run again in
  eval mode under ``no_grad`` (so that no dropout mask is drawn and no running statistic changes), with
  forward hooks.

All of it happens outside the training step, so on a GPU the captured step stays one CUDA graph and the
statistics are read outside it; the cost is one copy of the weights, the norms and one forward of 16 images
every ``every`` steps (``python benchmarks/diagnostics_cost.py`` measures it).
``as_dict()`` is what metrics.json keeps under ``layers``; :func:`plot_layers` draws layers.png.
docs/backprop.md ("Reading the diagnostics") says what healthy and unhealthy runs look like.
"""
import json
import math

import numpy
from matplotlib.figure import Figure

from . import backend, nn
from .files import json_safe
from .nn.module import evaluating

__all__ = ["Diagnostics", "plot_layers", "check_record"]


def _norm(a):
    """The 2-norm of an array as a float: a dot product in the array's dtype, or in float64 where that overflows."""
    xp = backend.array_module(a)
    flat = a.reshape(-1)
    square = float(xp.dot(flat, flat))
    if not math.isfinite(square) and bool(xp.isfinite(a).all()):
        square = float(xp.dot(flat.astype("float64"), flat.astype("float64")))
    return math.sqrt(square)


class Diagnostics:
    """Records the statistics above for ``model`` every ``every`` iterations (module docstring), the output
    statistics from the first ``sample`` images of the batch."""

    def __init__(self, model, every=25, sample=16):
        self.model, self.every, self.sample = model, int(every), int(sample)
        self.parameters = list(model.named_parameters())
        self.layers = self._layers(model)
        self.iterations, self._before = [], None
        self.gradient_norm = {name: [] for name, _ in self.parameters}
        self.update_ratio = {name: [] for name, _ in self.parameters}
        self.output = {name: {"mean": [], "std": [], "zeros": []} for name, _ in self.layers}

    @staticmethod
    def _layers(model):
        """(name, module) of the layers whose outputs are recorded: a Chain's ``layers`` in order (named as the
        model registers them, else "<position>.<class>"; a layer object used several times, at its first use), else every
        module without sub-modules; reshaping layers (Flatten, Unflatten) left out."""
        names = {id(m): name for name, m in model.named_modules() if name}
        chain = getattr(model, "layers", None)
        reshape = (nn.Flatten, nn.Unflatten)  # their outputs are their inputs, rearranged: nothing to add
        if chain is None:
            return [(name, m) for name, m in model.named_modules() if name and not m.children()
                    and not isinstance(m, reshape)]
        return [(names.get(id(m), f"{i}.{type(m).__name__}"), m) for i, m in enumerate(chain)
                if not any(earlier is m for earlier in chain[:i]) and not isinstance(m, reshape)]

    def due(self, iteration):
        """True when iteration ``iteration`` (counted from 0 over the whole run) is recorded."""
        return self.every > 0 and iteration % self.every == 0

    def before_step(self, iteration):
        """Keep a copy of the weights, when this iteration is recorded (call just before the step)."""
        self._before = [p.data.copy() for _, p in self.parameters] if self.due(iteration) else None

    def after_step(self, iteration, batch):
        """Record the statistics of the step just taken on ``batch`` (its input), when this iteration is recorded."""
        if self._before is None:
            return
        self.iterations.append(int(iteration))
        for (name, p), before in zip(self.parameters, self._before):
            self.gradient_norm[name].append(math.nan if p.grad is None else _norm(p.grad))  # nan: no backward reached it
            self.update_ratio[name].append(_norm(p.data - before) / max(_norm(before), 1e-30))
        self._before = None
        calls = {}

        def hook(name):
            def record(module, inputs, output):
                if calls.get(name):  # a layer object used several times: its first use in the forward
                    return
                calls[name] = True
                out = output[0] if isinstance(output, tuple) else output
                stats = self.output[name]
                stats["mean"].append(float(out.mean()))
                stats["std"].append(float(out.std()))
                stats["zeros"].append(float((out == 0).mean()))
            return record
        handles = [module.register_forward_hook(hook(name)) for name, module in self.layers]
        try:
            with evaluating(self.model):
                self.model(batch[:self.sample])
        finally:
            for handle in handles:
                handle.remove()
        for name, _ in self.layers:  # a layer the forward did not reach: a gap
            for values in self.output[name].values():
                if len(values) < len(self.iterations):
                    values.append(None)

    def restore(self, record):
        """Take up the records of ``record`` (what :meth:`as_dict` gave, as a resumed run's checkpoint keeps it),
        where they are of this model's parameters and layers; otherwise start afresh. ValueError, saying what is
        wrong, where ``record`` is not such records (check_record)."""
        if record is None:
            return
        check_record(record)
        if (set(record["gradient_norm"]) != set(self.gradient_norm)
                or set(record["output"]) != set(self.output)):
            return
        self.iterations = list(record["iterations"])
        self.gradient_norm = {k: list(v) for k, v in record["gradient_norm"].items()}
        self.update_ratio = {k: list(v) for k, v in record["update_ratio"].items()}
        self.output = {k: {s: list(v) for s, v in stats.items()} for k, stats in record["output"].items()}

    def as_dict(self):
        """The records as metrics.json keeps them (JSON: non-finite values become None)."""
        return json_safe({"every": self.every, "iterations": self.iterations, "gradient_norm": self.gradient_norm,
                          "update_ratio": self.update_ratio, "output": self.output})


def _is_value(v):
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def check_record(record):
    """ValueError naming the first part of ``record`` that is not as :meth:`Diagnostics.as_dict` writes it: a dict
    with ``every`` (a whole number), ``iterations`` (whole numbers, increasing), and under ``gradient_norm``,
    ``update_ratio`` and each layer's ``output`` mean, std and zeros, one number (or null) per iteration."""
    if not isinstance(record, dict):
        raise ValueError(f"they are {type(record).__name__}, not a dict of records")
    for key in ("every", "iterations", "gradient_norm", "update_ratio", "output"):
        if key not in record:
            raise ValueError(f"{key} is missing")
    iterations = record["iterations"]
    if not isinstance(record["every"], int) or isinstance(record["every"], bool) or record["every"] < 1:
        raise ValueError(f"every = {json.dumps(record['every'])[:40]} is not a positive whole number")
    if (not isinstance(iterations, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                    for i in iterations)
            or any(b <= a for a, b in zip(iterations, iterations[1:]))):
        raise ValueError(f"iterations = {json.dumps(iterations)[:40]} is not a list of increasing whole numbers")
    series = [(f"gradient_norm[{name!r}]", values) for name, values in _items(record, "gradient_norm")]
    series += [(f"update_ratio[{name!r}]", values) for name, values in _items(record, "update_ratio")]
    for name, stats in _items(record, "output"):
        if not isinstance(stats, dict) or set(stats) != {"mean", "std", "zeros"}:
            raise ValueError(f"output[{name!r}] does not hold mean, std and zeros")
        series += [(f"output[{name!r}][{s!r}]", stats[s]) for s in ("mean", "std", "zeros")]
    for name, values in series:
        if not isinstance(values, list) or len(values) != len(iterations) or not all(map(_is_value, values)):
            raise ValueError(f"{name} is not a list of {len(iterations)} numbers (one per recorded iteration)")


def _items(record, key):
    if not isinstance(record[key], dict):
        raise ValueError(f"{key} is not a dict")
    return record[key].items()


def plot_layers(path, record, title=""):
    """layers.png: one panel per statistic (gradient norm, update ratio, and the outputs' mean, standard
    deviation and fraction of zeros), one line per parameter tensor or layer, log scales where the values span
    decades; the update ratio's usual level, 1e-3, is dotted."""
    iterations = numpy.asarray(record["iterations"])
    figure = Figure(figsize=(13, 11), dpi=100)
    panels = figure.subplots(3, 2).flat
    outputs = record["output"]
    series = [(record["gradient_norm"], "gradient norm ‖dL/dw‖", "log"),
              (record["update_ratio"], "update ratio ‖Δw‖ / ‖w‖", "log"),
              ({k: v["mean"] for k, v in outputs.items()}, "output mean", "linear"),
              ({k: v["std"] for k, v in outputs.items()}, "output standard deviation", "log"),
              ({k: v["zeros"] for k, v in outputs.items()}, "output: fraction of exact zeros", "linear")]
    for axes, (lines, label, scale) in zip(panels, series):
        for index, (name, values) in enumerate(lines.items()):
            values = numpy.array([numpy.nan if v is None else v for v in values], dtype=numpy.float64)
            if scale == "log":
                values = numpy.where(values > 0, values, numpy.nan)
            if numpy.isfinite(values).any():
                axes.plot(iterations[:len(values)], values, label=name, color=f"C{index % 10}",
                          linestyle=("-", "--", ":")[index // 10 % 3], linewidth=1.2)
        axes.set(xlabel="iteration", title=label, yscale=scale)
        axes.grid(True, which="both", alpha=0.3)
    panels[1].axhline(1e-3, color="gray", linewidth=0.8, linestyle=":")
    legend = panels[5]
    legend.axis("off")
    for source, heading, where in ((panels[0], "parameters", "upper left"), (panels[2], "layer outputs", "upper right")):
        handles, labels = source.get_legend_handles_labels()
        legend.add_artist(legend.legend(handles, labels, title=heading, fontsize="x-small", ncol=2, loc=where))
    figure.suptitle(title or "Per-layer diagnostics")
    figure.tight_layout()
    figure.savefig(path)
