"""Per-layer training diagnostics: what backprop is doing inside the network, recorded as it trains.

Every ``every`` iterations (25 by default: the trainer reads the losses back at that cadence anyway), and at the
run's last iteration (``last``: so that a run of a few steps has two records), a :class:`Diagnostics` records

* for every parameter tensor, the norm of its gradient and the update-to-weight ratio ‖Δw‖ / ‖w‖ of the step
  just taken (from a copy of the weights made before that step; infinite, null in JSON, for a parameter that
  was exactly zero before a step that moved it, as a zero-initialised bias is at the first step);
* for every layer, the mean, the standard deviation and the fraction of exact zeros of its output (dead ReLU
  units show as zeros near 1), from a forward of the first 16 images of the batch just trained, run again in
  eval mode under ``no_grad`` (so that no dropout mask is drawn and no running statistic changes), with
  forward hooks.

All of it happens outside the training step, so on a GPU the captured step stays one CUDA graph and the
statistics are read outside it; the cost is one copy of the weights, the norms and one forward of 16 images
every ``every`` steps (``python benchmarks/diagnostics_cost.py`` measures it).
``as_dict()`` is what metrics.json keeps under ``layers``; :func:`plot_layers` draws layers.png, one row of small
panels per layer (:func:`layer_rows`). docs/backprop.md ("Reading the diagnostics") says what healthy and
unhealthy runs look like.
"""
import json
import math

import numpy
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator
from matplotlib.transforms import blended_transform_factory

from . import backend, nn
from .files import json_safe
from .nn.module import evaluating

__all__ = ["Diagnostics", "plot_layers", "layer_rows", "check_record", "RATIO_CAP"]

RATIO_CAP = 10.0  # layers.png draws update ratios above this (a step ten times the weight) as marks at the top


def _norm(a):
    """The 2-norm of an array as a float: a dot product in the array's dtype, or in float64 where that overflows."""
    xp = backend.array_module(a)
    flat = a.reshape(-1)
    square = float(xp.dot(flat, flat))
    if not math.isfinite(square) and bool(xp.isfinite(a).all()):
        square = float(xp.dot(flat.astype("float64"), flat.astype("float64")))
    return math.sqrt(square)


class Diagnostics:
    """Records the statistics above for ``model`` every ``every`` iterations and at iteration ``last`` (the run's
    last, where known: the trainer sets it), the output statistics from the first ``sample`` images of the batch
    (module docstring)."""

    def __init__(self, model, every=25, sample=16, last=None):
        self.model, self.every, self.sample, self.last = model, int(every), int(sample), last
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
        """True when iteration ``iteration`` (counted from 0 over the whole run) is recorded: every ``every``-th,
        and the last."""
        return (self.every > 0 and iteration % self.every == 0) or iteration == self.last

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
            change, size = _norm(p.data - before), _norm(before)
            self.update_ratio[name].append(change / size if size > 0 else math.inf if change > 0 else 0.0)
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


def layer_rows(record):
    """The rows of layers.png: [(layer name, its parameters' names, the names of the outputs drawn beside)]. A
    layer with parameters starts a row (its parameters are "<layer>.weight", "<layer>.bias", ...), and the
    outputs of the layers after it that have none (its ReLU, a pooling) join that row; a layer without
    parameters before any that has some gets a row of its own, as do parameters whose layer's output is not
    recorded."""
    owners = {}
    for name in record["gradient_norm"]:
        owners.setdefault(name.rpartition(".")[0] or name, []).append(name)
    rows = []
    for output in record["output"]:
        if output in owners:
            rows.append((output, owners.pop(output), [output]))
        elif rows:
            rows[-1][2].append(output)
        else:
            rows.append((output, [], [output]))
    return rows + [(owner, names, []) for owner, names in owners.items()]


_EDGE = {"bottom": 0.04, "top": 0.96}  # where special values are marked, as a fraction of a panel's height
_MARKS = {"zero": ("v", "bottom", "exactly 0 (dead: nothing flows)"),
          "missing": ("x", "bottom", "none: no gradient reached it / layer not reached"),
          "above": ("^", "top", f"off the scale: a ratio above {RATIO_CAP:g}, or from a weight that was exactly 0")}


def _draw(axes, iterations, values, log, cap=None, slot=0, **style):
    """One series on ``axes``: its positive (log) or finite values as a line (a dot at each of up to 40 records,
    so that a single record shows), and its special values as marks at the panel's edge (_MARKS): exact zeros on
    a log scale and missing values at the bottom, values above ``cap`` (and infinite ones, null in the JSON) at
    the top, each series ``slot`` a little further in (so that the weight's marks do not hide under the bias's).
    Returns {kind: count} of what it drew: "points", "zero", "missing", "above"."""
    x = numpy.asarray(iterations[:len(values)], dtype=numpy.float64)
    v = numpy.array([numpy.nan if value is None else value for value in values], dtype=numpy.float64)
    nothing = numpy.zeros(len(v), dtype=bool)
    if cap is not None:  # a ratio: null (infinite in the record) and huge ones go to the top
        above, missing = ~numpy.isfinite(v) | (v > cap), nothing
    else:
        above, missing = nothing, ~numpy.isfinite(v)
    zero = (v == 0) if log else nothing
    shown = numpy.isfinite(v) & ~above & ~zero & ((v > 0) if log else True)
    line = numpy.where(shown, v, numpy.nan)
    axes.plot(x, line, marker="." if len(v) <= 40 else None, markersize=3, **style)  # dots where they are few
    edge = blended_transform_factory(axes.transData, axes.transAxes)
    counts = {"points": int(shown.sum())}
    for kind, chosen in (("zero", zero), ("missing", missing), ("above", above)):
        counts[kind] = int(chosen.sum())
        if chosen.any():
            marker, where, _ = _MARKS[kind]
            level = _EDGE[where] + (0.07 * slot if where == "bottom" else -0.07 * slot)
            axes.plot(x[chosen], numpy.full(int(chosen.sum()), level), linestyle="none", marker=marker,
                      markersize=5, color=style.get("color"), transform=edge, clip_on=False)
    return counts


def _decades(axes, reference=None):
    """A log scale over whole decades around the values drawn in data coordinates on ``axes`` (and
    ``reference``), labelled at each decade only; linear where nothing positive was drawn (marks only)."""
    values = [line.get_xydata()[:, 1] for line in axes.get_lines() if line.get_transform() == axes.transData]
    values = numpy.concatenate(values) if values else numpy.zeros(0)
    values = values[numpy.isfinite(values) & (values > 0)]
    if not values.size:
        axes.set_yticks([])
        return
    if reference is not None:
        values = numpy.append(values, reference)
    low, high = math.floor(math.log10(values.min())), math.ceil(math.log10(values.max()))
    axes.set_yscale("log")
    axes.set_ylim(10.0 ** low, 10.0 ** max(high, low + 1))
    axes.yaxis.set_major_locator(LogLocator(numticks=6))
    axes.yaxis.set_minor_locator(NullLocator())  # decades only: minor ticks over many decades cost seconds


def plot_layers(path, record, title=""):
    """layers.png: one row of four small panels per layer (:func:`layer_rows`): the gradient norm ‖dL/dw‖ and the
    update ratio ‖Δw‖ / ‖w‖ of its weight and bias (two lines each; the ratio's usual level, 1e-3, dotted), and
    beside them the standard deviation and the fraction of exact zeros of its output and of the parameter-free
    layers after it (its ReLU). Log scales over whole decades but for the fraction of zeros; up to 40 records
    each is a dot, so a run with one or two records draws them. Values a log scale cannot show are marked at a panel's edge, never left out:
    exact zeros (a dead layer) and missing values (no gradient) at the bottom, update ratios above RATIO_CAP or
    from a weight that was exactly zero at the top, so a zero-initialised bias cannot flatten the others.

    Returns {row: {panel: {series: {kind: count}}}}, what each panel drew (the counts of :func:`_draw`)."""
    from .plots import fit_title
    iterations = list(record["iterations"])
    rows = layer_rows(record)
    figure = Figure(figsize=(13, 1.55 * len(rows) + 1.3), dpi=100)
    grid = figure.subplots(len(rows), 4, squeeze=False)
    drawn = {}
    headings = ("gradient norm ‖dL/dw‖", "update ratio ‖Δw‖ / ‖w‖", "output standard deviation",
                "output: fraction of exact zeros")
    for row, (layer, parameters, outputs) in enumerate(rows):
        panels, drawn[layer] = grid[row], {}
        for column, (key, log, cap) in enumerate((("gradient_norm", True, None), ("update_ratio", True, RATIO_CAP))):
            axes, drawn[layer][key] = panels[column], {}
            for parameter in parameters:
                part = parameter[len(layer) + 1:] if parameter.startswith(layer + ".") else parameter
                style = dict(color="C0" if part == "weight" else "C1" if part == "bias" else "C4",
                             linestyle="-" if part == "weight" else "--", linewidth=1.2, label=part)
                drawn[layer][key][part] = _draw(axes, iterations, record[key][parameter], log, cap,
                                                slot=parameters.index(parameter), **style)
            if not parameters:
                axes.text(0.5, 0.5, "no parameters", ha="center", va="center", transform=axes.transAxes,
                          color="gray", fontsize="small")
        for column, (statistic, log) in enumerate((("std", True), ("zeros", False)), start=2):
            axes, drawn[layer][statistic] = panels[column], {}
            for index, output in enumerate(outputs):
                style = dict(color=f"C{2 + index % 8}", linewidth=1.2, label=output)
                drawn[layer][statistic][output] = _draw(axes, iterations, record["output"][output][statistic], log,
                                                        slot=index, **style)
            if outputs:
                axes.legend(fontsize="xx-small", loc="upper right", handlelength=1.5)
        for column, axes in enumerate(panels):
            if column != 3:
                _decades(axes, reference=1e-3 if column == 1 and parameters else None)
            else:
                axes.set_ylim(-0.05, 1.05)
            if column == 1 and parameters:
                axes.axhline(1e-3, color="gray", linewidth=0.8, linestyle=":")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
            axes.grid(True, which="major", alpha=0.3)
            axes.tick_params(labelsize="x-small")
            if row == 0:
                axes.set_title(headings[column], fontsize="small")
            if row == len(rows) - 1:
                axes.set_xlabel("iteration", fontsize="small")
        panels[0].set_ylabel(layer, fontsize="small", fontweight="bold")
    keys = [Line2D([], [], color="C0", label="weight"), Line2D([], [], color="C1", linestyle="--", label="bias")]
    keys += [Line2D([], [], color="gray", linestyle="none", marker=marker, label=text)
             for marker, _, text in _MARKS.values()]
    figure.legend(handles=keys, loc="upper center", ncol=5, fontsize="x-small",
                  bbox_to_anchor=(0.5, 1 - 0.5 / figure.get_figheight()))
    fit_title(figure, title or "Per-layer diagnostics")
    height = figure.get_figheight()  # fixed margins (in inches), not tight_layout: it takes seconds for 32 panels
    figure.subplots_adjust(left=0.07, right=0.985, top=1 - 1.1 / height, bottom=0.55 / height, hspace=0.45,
                           wspace=0.25)
    figure.savefig(path)
    return drawn
