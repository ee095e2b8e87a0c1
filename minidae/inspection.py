"""Looking inside a trained autoencoder: its code (the bottleneck), what the code keeps, its filters and maps.

``minidae inspect CHECKPOINT --out DIR`` writes, from the functions here:

* ``latent.png``: the test set's codes projected to two dimensions by PCA (NumPy's SVD of the centred codes),
  coloured by digit;
* ``interpolation.png``: images decoded along the straight line between the codes of two test digits of
  different classes, for several pairs;
* ``filters.png``: the first layer's filters (a conv layer's kernels, or a linear layer's weight rows as
  28 x 28 images); ``feature_maps.png``: every conv layer's output for one test digit;
* ``inspect.json``: the *linear probe*: a linear classifier (minidae's own Linear, CrossEntropyLoss and Adam)
  trained on the training set's codes and tested on the test set's, the standard measure of what a code keeps
  of the digit, beside the same probe on the raw pixels.

A model says where its code is with two methods, ``encode(x)`` (images to codes) and ``decode(z)`` (codes to
images): the six presets have them (minidae.models.Chain). For a model of one's own, define them; a Sequential
autoencoder splits as ``encoder, decoder = model[:k], model[k:]``.
"""
import math

import numpy
from matplotlib.figure import Figure

from . import backend, nn, optim
from .data.loader import unit_images
from .nn.module import evaluating

__all__ = ["codes", "pca", "linear_probe", "latent_plot", "interpolation_plot", "filters_plot", "feature_maps_plot",
           "inspect_model"]


def codes(model, images, batch_size=500):
    """The codes of uint8 images (N, H, W) as a host float64 array (N, D) (each code flattened)."""
    if not (hasattr(model, "encode") and hasattr(model, "decode")):
        raise ValueError(f"{type(model).__name__} has no encode/decode: define encode(x) and decode(z) on the model "
                         f"to say where its code is (minidae.inspection's docstring)")
    parts = []
    with evaluating(model):
        for start in range(0, len(images), batch_size):
            z = model.encode(unit_images(images[start:start + batch_size]))
            parts.append(backend.to_numpy(z).reshape(len(z), -1).astype(numpy.float64))
    return numpy.concatenate(parts)


def pca(features, dims=2):
    """(the features projected on their first ``dims`` principal axes, the fraction of variance each explains),
    from the SVD of the centred features."""
    centred = features - features.mean(axis=0)
    _, singular, axes = numpy.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2
    return centred @ axes[:dims].T, variance[:dims] / max(variance.sum(), 1e-300)


def linear_probe(train_x, train_y, test_x, test_y, epochs=10, batch_size=256, lr=1e-2, seed=0):
    """Test accuracy of a linear classifier (softmax regression: Linear, CrossEntropyLoss, Adam, from zero
    weights) trained on (train_x, train_y), features standardised by the training set's mean and deviation."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-8
    train_x, test_x = ((x - mean) / std for x in (train_x, test_x))
    xp = backend.xp
    train_x, test_x = xp.asarray(train_x, dtype=xp.float32), xp.asarray(test_x, dtype=xp.float32)
    train_y, test_y = xp.asarray(train_y, dtype=xp.int64), xp.asarray(test_y, dtype=xp.int64)
    classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    probe, criterion = nn.Linear(train_x.shape[1], classes), nn.CrossEntropyLoss()
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


def latent_plot(path, points, labels, explained, title=""):
    """The 2-D projection of the codes, one colour per class."""
    figure = Figure(figsize=(6.5, 6), dpi=100)
    axes = figure.add_subplot()
    for label in numpy.unique(labels):
        chosen = labels == label
        axes.scatter(points[chosen, 0], points[chosen, 1], s=4, alpha=0.6, color=f"C{int(label) % 10}",
                     label=str(int(label)))
    axes.set(xlabel=f"PC 1 ({explained[0]:.0%} of the variance)",
             ylabel=f"PC 2 ({explained[1]:.0%} of the variance)" if len(explained) > 1 else "PC 2",
             title=title or "Test codes, first two principal components")
    axes.legend(markerscale=3, fontsize="small", title="digit", loc="best")
    figure.tight_layout()
    figure.savefig(path)


def interpolation_plot(path, rows, steps, title=""):
    """One row per pair: decoded images (H, W) along the line between two codes; ``rows`` is a list of
    (label_a, label_b, images)."""
    figure = Figure(figsize=(1.0 * steps, 1.05 * len(rows) + 0.5), dpi=100)
    grid = figure.subplots(len(rows), steps, squeeze=False)
    for row, (a, b, images) in enumerate(rows):
        for column, image in enumerate(images):
            axes = grid[row, column]
            axes.imshow(image, cmap="gray", vmin=0, vmax=1)
            axes.set_xticks([]), axes.set_yticks([])
        grid[row, 0].set_ylabel(f"{a} to {b}")
    figure.suptitle(title or "Decoded along the straight line between two codes")
    figure.tight_layout()
    figure.savefig(path)


def _first_weighted_layer(model):
    return next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))), None)


def filters_plot(path, model, limit=64):
    """The first layer's filters: each kernel of a conv layer (summed over its input channels), or each weight
    row of a linear layer shown as a square image."""
    layer = _first_weighted_layer(model)
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d, ConvTranspose2d or Linear layer to show")
    weight = backend.to_numpy(layer.weight.data).astype(numpy.float64)
    if weight.ndim == 4:
        tiles = weight.sum(axis=1)
    else:
        side = math.isqrt(weight.shape[1])
        if side * side != weight.shape[1]:
            raise ValueError(f"{type(layer).__name__}'s weight rows ({weight.shape[1]} numbers) are not square images")
        tiles = weight.reshape(-1, side, side)
    tiles = tiles[:limit]
    columns = min(8, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    figure = Figure(figsize=(1.1 * columns, 1.1 * rows + 0.5), dpi=100)
    grid = figure.subplots(rows, columns, squeeze=False)
    bound = numpy.abs(tiles).max() or 1.0
    for index, axes in enumerate(grid.flat):
        axes.set_xticks([]), axes.set_yticks([])
        if index < len(tiles):
            axes.imshow(tiles[index], cmap="RdBu_r", vmin=-bound, vmax=bound)
        else:
            axes.axis("off")
    figure.suptitle(f"First layer ({type(layer).__name__}) filters, {len(tiles)} of {len(weight)} (red > 0 > blue)")
    figure.tight_layout()
    figure.savefig(path)


def feature_maps_plot(path, model, image, limit=16):
    """Each conv layer's output (up to ``limit`` channels) for one image (H, W) uint8, in eval mode."""
    convolutions = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not convolutions:
        raise ValueError(f"{type(model).__name__} has no conv layer whose feature maps could be shown")
    outputs, names = {}, {id(m): name for name, m in model.named_modules() if name}

    def keep(layer, inputs, output):  # a forward hook: each conv layer's first output, in the order of the calls
        if id(layer) not in outputs:
            outputs[id(layer)] = (names.get(id(layer), type(layer).__name__), backend.to_numpy(output)[0])
    handles = [layer.register_forward_hook(keep) for layer in convolutions]
    try:
        with evaluating(model):
            model(unit_images(image[None]))
    finally:
        for handle in handles:
            handle.remove()
    maps = list(outputs.values())
    columns = min(limit, max(m.shape[0] for _, m in maps))
    figure = Figure(figsize=(0.9 * columns + 1.2, 0.95 * len(maps) + 0.6), dpi=100)
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
    figure.suptitle("Feature maps of one test digit, layer by layer (first channels)")
    figure.tight_layout()
    figure.savefig(path)


def _interpolations(model, test_images, test_labels, pairs, steps):
    """(label_a, label_b, decoded images) along the straight line between two test digits' codes: the first
    of two classes at a time, or, without labels, test images 0 and 1, 2 and 3, ... (labelled by index)."""
    if test_labels is None:
        ends = [(2 * k, 2 * k + 1, 2 * k, 2 * k + 1) for k in range(min(pairs, len(test_images) // 2))]
    else:
        labels = numpy.asarray(test_labels)
        firsts = {int(c): int(numpy.flatnonzero(labels == c)[0]) for c in numpy.unique(labels)}
        classes = sorted(firsts)
        ends = [(classes[2 * k], classes[2 * k + 1], firsts[classes[2 * k]], firsts[classes[2 * k + 1]])
                for k in range(min(pairs, len(classes) // 2))]
    rows = []
    with evaluating(model):
        for a, b, first, second in ends:
            z = model.encode(unit_images(test_images[[first, second]]))
            weights = backend.xp.linspace(0, 1, steps, dtype=z.dtype).reshape((steps,) + (1,) * (z.ndim - 1))
            line = z[:1] * (1 - weights) + z[1:] * weights
            rows.append((a, b, backend.to_numpy(model.decode(line))[:, 0]))
    return rows


def inspect_model(model, train, test, out, pairs=4, steps=9, probe_epochs=10, title="", written=None):
    """Write latent.png, interpolation.png, filters.png and feature_maps.png into ``out`` and return what
    inspect.json holds (the probe accuracies, the PCA's explained variance, the files written and, for each
    left out, why). ``train`` and ``test`` are (uint8 images (N, H, W), labels (N,) or None). Without
    encode/decode only the filters and feature maps can be drawn; without labels there is no latent plot or
    probe (they are by class), and interpolations run between test images 0 and 1, 2 and 3, ...

    Each figure is written atomically (minidae.files.atomic_path): a full disk or Ctrl-C never leaves half a
    file. ``written``, a list, collects the names of those complete as they are written (for the caller to say
    what an interruption left)."""
    import os
    from .files import atomic_path

    def write(name, draw):
        with atomic_path(os.path.join(out, name)) as temporary:  # keeps the .png suffix, which names the format
            draw(temporary)
        written.append(name)

    (train_images, train_labels), (test_images, test_labels) = train, test
    written = [] if written is None else written
    result, skipped = {"train_images": int(len(train_images)), "test_images": int(len(test_images))}, {}
    if hasattr(model, "encode") and hasattr(model, "decode"):
        test_codes = codes(model, test_images)
        result["code_size"] = int(test_codes.shape[1])
        rows = _interpolations(model, test_images, test_labels, pairs, steps)
        write("interpolation.png", lambda path: interpolation_plot(path, rows, steps))
        if test_labels is not None and train_labels is not None:
            points, explained = pca(test_codes)
            write("latent.png", lambda path: latent_plot(path, points, numpy.asarray(test_labels), explained, title))
            pixels = lambda images: images.reshape(len(images), -1).astype(numpy.float64) / 255  # noqa: E731
            result.update(
                probe_accuracy_code=linear_probe(codes(model, train_images), train_labels, test_codes, test_labels,
                                                 probe_epochs),
                probe_accuracy_pixels=linear_probe(pixels(train_images), train_labels, pixels(test_images),
                                                   test_labels, probe_epochs),
                pca_explained_variance=[float(v) for v in explained])
        else:
            skipped["latent.png"] = skipped["probe"] = "the images have no labels (the plot and the probe are by class)"
    else:
        skipped["latent.png"] = skipped["interpolation.png"] = skipped["probe"] = (
            f"{type(model).__name__} has no encode(x) / decode(z) saying where its code is")
    for name, draw in (("filters.png", lambda path: filters_plot(path, model)),
                       ("feature_maps.png", lambda path: feature_maps_plot(path, model, test_images[0]))):
        try:
            write(name, draw)
        except ValueError as exc:  # no weighted first layer to show; no conv layers (the dense presets) to map
            skipped[name] = str(exc)
    return {**result, "written": list(written), "skipped": skipped}
