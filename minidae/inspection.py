"""Looking inside a trained autoencoder: its code (the bottleneck), what the code keeps, its filters and maps.

``minidae inspect CHECKPOINT --out DIR`` writes, from the functions here:

* ``latent.png``: the test set's codes projected to two dimensions by PCA (NumPy's SVD of the centred codes),
  coloured by class (named as the data name them: a folder's class sub-folders, MNIST's digits, else "class k");
* ``interpolation.png``: images decoded along the straight line between the codes of two test images of
  different classes, for several pairs;
* ``filters.png``: the first layer's filters (a conv layer's kernels, in colour for a layer that takes RGB
  pictures, or a linear layer's weight rows as square images); ``feature_maps.png``: every conv layer's output
  for one test image;
* ``inspect.json``: the *linear probe*: a linear classifier (minidae's own Linear, CrossEntropyLoss and Adam)
  trained on the training set's codes and tested on the test set's, the standard measure of what a code keeps
  of the class, beside the same probe on the raw pixels.

A model says where its code is with two methods, ``encode(x)`` (images to codes) and ``decode(z)`` (codes to
images): the six presets have them (minidae.models.Chain). For a model of one's own, define them; a Sequential
autoencoder splits as ``encoder, decoder = model[:k], model[k:]``. With ``encode`` alone the latent plot and the
probe are drawn, not the interpolations. What the model or its data cannot show is left out and named, one
line each: no labels, no ``encode`` / ``decode``, or one that raises (the line names the model and the error).
"""
import math

import numpy
from matplotlib.figure import Figure

from . import backend, nn, optim
from .data.images import unit_images
from .nn.module import evaluating
from .plots import class_names, fit_title, show_image

__all__ = ["codes", "pca", "linear_probe", "latent_plot", "interpolation_plot", "filters_plot", "feature_maps_plot",
           "inspect_model", "NothingToShow", "ModelRaised"]


def codes(model, images, batch_size=500):
    """The codes of images (N, H, W) or (N, C, H, W), uint8 or in [0, 1], as a host float64 array (N, D) (each
    code flattened)."""
    if not callable(getattr(model, "encode", None)):
        raise ValueError(f"{type(model).__name__} has no encode: define encode(x) (and decode(z)) on the model "
                         f"to say where its code is (minidae.inspection's docstring)")
    parts = []
    with evaluating(model):
        for start in range(0, len(images), batch_size):
            z = model.encode(unit_images(images[start:start + batch_size]))
            parts.append(backend.to_numpy(z).reshape(len(z), -1).astype(numpy.float64))
    return numpy.concatenate(parts)


def pca(features, dims=2):
    """(the features projected on their first ``dims`` principal axes, the fraction of variance each explains),
    from the SVD of the centred features; axes beyond those the features have (one sample, a code of one number)
    give zeros."""
    centred = features - features.mean(axis=0)
    _, singular, axes = numpy.linalg.svd(centred, full_matrices=False)
    variance = numpy.zeros(max(dims, len(singular)))
    variance[:len(singular)] = singular ** 2
    points = numpy.zeros((len(features), dims), dtype=centred.dtype)
    points[:, :len(axes[:dims])] = centred @ axes[:dims].T
    return points, variance[:dims] / max(variance.sum(), 1e-300)


def linear_probe(train_x, train_y, test_x, test_y, epochs=10, batch_size=256, lr=1e-2, seed=0):
    """Test accuracy of a linear classifier (softmax regression: Linear, CrossEntropyLoss, Adam, from zero
    weights) trained on (train_x, train_y), features standardised by the training set's mean and deviation. The
    labels may be any integers (-1 and 1, say): the probe has one output per distinct label."""
    labels, indices = numpy.unique(numpy.concatenate([backend.to_numpy(train_y), backend.to_numpy(test_y)]),
                                   return_inverse=True)
    train_y, test_y = indices[:len(train_y)], indices[len(train_y):]
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-8
    train_x, test_x = ((x - mean) / std for x in (train_x, test_x))
    xp = backend.xp
    train_x, test_x = xp.asarray(train_x, dtype=xp.float32), xp.asarray(test_x, dtype=xp.float32)
    train_y, test_y = xp.asarray(train_y, dtype=xp.int64), xp.asarray(test_y, dtype=xp.int64)
    probe, criterion = nn.Linear(train_x.shape[1], len(labels)), nn.CrossEntropyLoss()
    nn.init.zeros_(probe.weight)  # the problem is convex: start at zero, the same every time, the generator untouched
    nn.init.zeros_(probe.bias)
    optimizer = optim.Adam(probe.parameters(), lr=lr)
    rng = numpy.random.default_rng(seed)
    for _ in range(epochs):
        order = xp.asarray(rng.permutation(len(train_x)))
        for start in range(0, len(train_x), batch_size):
            index = order[start:start + batch_size]
            optimizer.zero_grad()
            criterion(probe(train_x[index]), train_y[index])
            probe.backward(criterion.backward())
            optimizer.step()
    with evaluating(probe):
        return float((probe(test_x).argmax(axis=1) == test_y).mean())


def latent_plot(path, points, labels, explained, title="", names=None, kind="class"):
    """The 2-D projection of the codes, one colour per class, each named by ``names`` (label k is names[k];
    "class k" without them) under the legend's heading ``kind`` ("digit" for MNIST). Returns the figure."""
    figure = Figure(figsize=(6.5, 6), dpi=100)
    axes = figure.add_subplot()
    present = numpy.unique(labels)
    for index, (label, name) in enumerate(zip(present, class_names(present, names))):
        chosen = labels == label
        axes.scatter(points[chosen, 0], points[chosen, 1], s=4, alpha=0.6,
                     color=f"C{index % 10}" if len(present) <= 10 else _tab20(index), label=name)
    axes.set(xlabel=f"PC 1 ({explained[0]:.0%} of the variance)",
             ylabel=f"PC 2 ({explained[1]:.0%} of the variance)" if len(explained) > 1 else "PC 2")
    fit_title(figure, title or "Test codes, first two principal components")
    axes.legend(markerscale=3, fontsize="small", title=kind, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    return figure


def _tab20(index):
    from matplotlib import colormaps
    return colormaps["tab20"](index % 20)


class NothingToShow(ValueError):
    """The model has no layer of the kind a figure shows (no weighted first layer, no conv layer)."""


class ModelRaised(RuntimeError):
    """The model's own forward raised while a figure was drawn (the error is its ``__cause__``)."""


def interpolation_plot(path, rows, steps, title=""):
    """One row per pair: decoded images ((H, W), or (C, H, W) in colour) along the line between two codes; ``rows``
    is a list of (name_a, name_b, images). Returns the figure."""
    figure = Figure(figsize=(max(1.0 * steps, 6), 1.05 * len(rows) + 0.7), dpi=100)
    grid = figure.subplots(len(rows), steps, squeeze=False)
    for row, (a, b, images) in enumerate(rows):
        for column, image in enumerate(images):
            show_image(grid[row, column], image)
        grid[row, 0].set_ylabel(f"{a}\nto {b}", fontsize="small")
    fit_title(figure, title or "Decoded along the straight line between two codes")
    figure.tight_layout()
    figure.savefig(path)
    return figure


def _first_weighted_layer(model):
    return next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))), None)


def filters_plot(path, model, limit=64):
    """The first layer's filters: each kernel of a conv layer (summed over its input channels; in colour where
    it takes 3, an RGB picture's, grey for 0), or each weight row of a linear layer shown as a square image (in
    colour where it holds 3 squares). Returns the figure."""
    layer = _first_weighted_layer(model)
    if layer is None:
        raise NothingToShow(f"{type(model).__name__} has no Conv2d, ConvTranspose2d or Linear layer to show")
    weight = backend.to_numpy(layer.weight.data).astype(numpy.float64)
    colour = False
    if weight.ndim == 4:
        colour = isinstance(layer, nn.Conv2d) and weight.shape[1] == 3
        tiles = weight if colour else weight.sum(axis=1)
    else:
        side = math.isqrt(weight.shape[1])
        third = math.isqrt(weight.shape[1] // 3)
        if side * side == weight.shape[1]:
            tiles = weight.reshape(-1, side, side)
        elif 3 * third * third == weight.shape[1]:
            tiles, colour = weight.reshape(-1, 3, third, third), True
        else:
            raise NothingToShow(f"{type(layer).__name__}'s weight rows ({weight.shape[1]} numbers) are not square "
                                f"images")
    tiles = tiles[:limit]
    columns = min(8, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    figure = Figure(figsize=(max(1.1 * columns, 5), 1.1 * rows + 0.8), dpi=100)
    grid = figure.subplots(rows, columns, squeeze=False)
    bound = numpy.abs(tiles).max() or 1.0
    for index, axes in enumerate(grid.flat):
        axes.set_xticks([]), axes.set_yticks([])
        if index < len(tiles) and colour:
            axes.imshow(numpy.clip(0.5 + tiles[index].transpose(1, 2, 0) / (2 * bound), 0, 1))
        elif index < len(tiles):
            axes.imshow(tiles[index], cmap="RdBu_r", vmin=-bound, vmax=bound)
        else:
            axes.axis("off")
    fit_title(figure, f"First layer ({type(layer).__name__}) filters, {len(tiles)} of {len(weight)} "
                      + ("(RGB: each channel's weight; grey = 0)" if colour else "(red > 0 > blue)"))
    figure.tight_layout()
    figure.savefig(path)
    return figure


def feature_maps_plot(path, model, image, limit=16):
    """Each conv layer's output (up to ``limit`` channels) for one image ((H, W) or (C, H, W), uint8 or in
    [0, 1]), in eval mode. Returns the figure."""
    convolutions = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not convolutions:
        raise NothingToShow(f"{type(model).__name__} has no conv layer whose feature maps could be shown")
    outputs, names = {}, {id(m): name for name, m in model.named_modules() if name}

    def keep(layer, inputs, output):  # a forward hook: each conv layer's first output, in the order of the calls
        if id(layer) not in outputs:
            outputs[id(layer)] = (names.get(id(layer), type(layer).__name__), backend.to_numpy(output)[0])
    handles = [layer.register_forward_hook(keep) for layer in convolutions]
    try:
        with evaluating(model):
            model(unit_images(image[None]))
    except Exception as exc:  # the model's code, not the figure's: said as such
        raise ModelRaised(f"{type(exc).__name__}: {exc}") from exc
    finally:
        for handle in handles:
            handle.remove()
    maps = list(outputs.values())
    columns = min(limit, max(m.shape[0] for _, m in maps))
    figure = Figure(figsize=(max(0.9 * columns + 1.2, 5), 0.95 * len(maps) + 0.8), dpi=100)
    grid = figure.subplots(len(maps), columns, squeeze=False)
    for row, (name, channels) in enumerate(maps):
        for column in range(columns):
            axes = grid[row, column]
            axes.set_xticks([]), axes.set_yticks([])
            if column < len(channels):
                axes.imshow(channels[column], cmap="viridis")
            else:
                axes.axis("off")
        grid[row, 0].set_ylabel(f"{name}\n{channels.shape[1]}x{channels.shape[2]}", fontsize="small")
    fit_title(figure, "Feature maps of one test image, layer by layer (first channels)")
    figure.tight_layout()
    figure.savefig(path)
    return figure


def _interpolations(model, test_images, test_labels, pairs, steps, names=None):
    """(name_a, name_b, decoded images) along the straight line between two test images' codes: the first of
    two classes at a time, or, without labels, test images 0 and 1, 2 and 3, ... (named by index)."""
    if test_labels is None:
        ends = [(f"image {2 * k}", f"image {2 * k + 1}", 2 * k, 2 * k + 1)
                for k in range(min(pairs, len(test_images) // 2))]
    else:
        labels = numpy.asarray(test_labels)
        firsts = {int(c): int(numpy.flatnonzero(labels == c)[0]) for c in numpy.unique(labels)}
        classes = sorted(firsts)
        named = dict(zip(classes, class_names(classes, names)))
        ends = [(named[classes[2 * k]], named[classes[2 * k + 1]], firsts[classes[2 * k]], firsts[classes[2 * k + 1]])
                for k in range(min(pairs, len(classes) // 2))]
    rows = []
    with evaluating(model):
        for a, b, first, second in ends:
            z = model.encode(unit_images(test_images[[first, second]]))
            weights = backend.xp.linspace(0, 1, steps, dtype=z.dtype).reshape((steps,) + (1,) * (z.ndim - 1))
            line = z[:1] * (1 - weights) + z[1:] * weights
            decoded = backend.to_numpy(model.decode(line))
            rows.append((a, b, decoded[:, 0] if decoded.ndim == 4 and decoded.shape[1] == 1 else decoded))
    return rows


def _pixels(images):
    """Images as host float64 rows (N, C x H x W) in [0, 1]: the probe's baseline features."""
    images = backend.to_numpy(images)
    rows = images.reshape(len(images), -1).astype(numpy.float64)
    return rows / 255 if images.dtype == numpy.uint8 else rows


def _raised(name, what, exc):
    """One line: the model ``name``'s ``what`` (encode, decode, forward) raised ``exc``."""
    message = str(exc).strip().splitlines()
    return f"the model {name}'s {what} raised {type(exc).__name__}" + (f": {message[0]}" if message else "")


def _probe_labels(train_labels, test_labels, classes):
    """(train labels, test labels as indices of the training set's classes) for the probe, or (None, why) where
    the test images' classes are not the training images' (each folder names its own)."""
    names = classes or {}
    train_names, test_names = names.get("train"), names.get("test")
    if train_names is None or test_names is None or list(train_names) == list(test_names):
        return numpy.asarray(train_labels), numpy.asarray(test_labels)
    missing = sorted({test_names[int(k)] for k in numpy.unique(test_labels)} - set(train_names))
    if missing:
        return None, (f"the test images' classes ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}) are "
                      f"not among the training images' ({', '.join(list(train_names)[:4])}"
                      f"{', ...' if len(train_names) > 4 else ''}): a classifier of the training classes cannot "
                      f"be tested on them")
    where = {name: index for index, name in enumerate(train_names)}
    return numpy.asarray(train_labels), numpy.array([where[test_names[int(k)]] for k in test_labels])


def inspect_model(model, train, test, out, pairs=4, steps=9, probe_epochs=10, title="", written=None,
                  classes=None, name=None, kind="class"):
    """Write latent.png, interpolation.png, filters.png and feature_maps.png into ``out`` and return what
    inspect.json holds (the probe accuracies, the PCA's explained variance, the files written and, for each
    left out, why, in one line). ``train`` and ``test`` are (images (N, H, W) or (N, C, H, W), uint8 or in
    [0, 1], labels (N,) or None); ``classes`` is {"train": names, "test": names} where the data name their
    classes (minidae.train.load_data), ``kind`` the latent plot's word for a class ("digit" for MNIST), ``name``
    the model's name in the lines that say what was left out (default: its class's).

    With ``encode`` the latent plot and the probe are drawn (they are by class: the images need labels, and the
    probe the same classes in both sets); with ``decode`` too, the interpolations. An ``encode`` or ``decode`` that
    raises leaves out what needs it, the reason naming the model and the error; so does a forward that raises
    (the feature maps). Without encode only the filters and feature maps can be drawn.

    Each figure is written atomically (minidae.files.atomic_path): a full disk or Ctrl-C never leaves half a
    file. ``written``, a list, collects the names of those complete as they are written (for the caller to say
    what an interruption left)."""
    import os
    from .files import atomic_path

    def write(file, draw):
        with atomic_path(os.path.join(out, file)) as temporary:  # keeps the .png suffix, which names the format
            draw(temporary)
        written.append(file)

    (train_images, train_labels), (test_images, test_labels) = train, test
    name = name or type(model).__name__
    names = classes or {}
    written = [] if written is None else written
    result, skipped = {"train_images": int(len(train_images)), "test_images": int(len(test_images))}, {}
    test_codes = None
    if not callable(getattr(model, "encode", None)):
        skipped["latent.png"] = skipped["interpolation.png"] = skipped["probe"] = (
            f"{name} has no encode(x) / decode(z) saying where its code is")
    else:
        try:
            test_codes = codes(model, test_images)
        except Exception as exc:  # the model's own code: named in one line, the rest still drawn
            skipped["latent.png"] = skipped["interpolation.png"] = skipped["probe"] = _raised(name, "encode", exc)
    if test_codes is not None:
        result["code_size"] = int(test_codes.shape[1])
        if not callable(getattr(model, "decode", None)):
            skipped["interpolation.png"] = f"{name} has no decode(z) to draw codes with"
        else:
            try:
                rows = _interpolations(model, test_images, test_labels, pairs, steps, names.get("test"))
            except Exception as exc:
                skipped["interpolation.png"] = _raised(name, "decode", exc)
            else:
                if rows:
                    write("interpolation.png", lambda path: interpolation_plot(path, rows, steps))
                else:
                    skipped["interpolation.png"] = ("the test images hold fewer than two classes (or, without labels, "
                                                    "two images) to draw between")
        if test_labels is None:
            skipped["latent.png"] = "the test images have no labels (the plot is by class)"
        else:
            points, explained = pca(test_codes)
            result["pca_explained_variance"] = [float(v) for v in explained]
            write("latent.png", lambda path: latent_plot(path, points, numpy.asarray(test_labels), explained, title,
                                                         names.get("test"), kind))
        probe_train, probe_test = (None, "the images have no labels (the probe is by class)") \
            if test_labels is None or train_labels is None else _probe_labels(train_labels, test_labels, names)
        if probe_train is None:
            skipped["probe"] = probe_test
        else:
            try:
                train_codes = codes(model, train_images)
            except Exception as exc:
                skipped["probe"] = _raised(name, "encode", exc)
            else:
                result.update(
                    probe_accuracy_code=linear_probe(train_codes, probe_train, test_codes, probe_test, probe_epochs),
                    probe_accuracy_pixels=linear_probe(_pixels(train_images), probe_train, _pixels(test_images),
                                                       probe_test, probe_epochs))
    for file, draw in (("filters.png", lambda path: filters_plot(path, model)),
                       ("feature_maps.png", lambda path: feature_maps_plot(path, model, test_images[0]))):
        try:
            write(file, draw)
        except NothingToShow as exc:  # no weighted first layer to show; no conv layers (the dense presets) to map
            skipped[file] = str(exc)
        except ModelRaised as exc:
            skipped[file] = _raised(name, "forward", exc.__cause__)
    return {**result, "written": list(written), "skipped": skipped}
