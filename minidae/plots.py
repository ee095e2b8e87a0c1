"""The figures a run leaves behind (matplotlib's object API: no global state, no display needed).

Every figure's title is set by :func:`fit_title`, which wraps it to the figure's width; pictures are drawn by
:func:`show_image`, grayscale (H, W) or colour (3, H, W) alike."""
import textwrap

import numpy
from matplotlib.figure import Figure

__all__ = ["loss_vs_iterations", "denoising_grid", "psnr_vs_level", "fit_title", "show_image", "class_names"]

TITLE_POINTS = 12  # the size of a figure's title (matplotlib's "large" at its default font size of 10)


def fit_title(figure, text, fontsize=TITLE_POINTS):
    """Set ``text`` as the figure's title, wrapped into lines that fit its width (an average character of a
    ``fontsize``-point font is taken as 0.6 of its size, a little wider than DejaVu Sans's); returns the title."""
    width = figure.get_figwidth() * 72 * 0.94  # points, less a margin
    per_line = max(10, int(width / (0.6 * fontsize)))
    return figure.suptitle("\n".join(textwrap.wrap(text, per_line)) or text, fontsize=fontsize)


def class_names(labels, names=None):
    """The name of each label: ``names[k]`` for label k where the data name their classes (a folder's class
    sub-folders, MNIST's digits), else "class k"."""
    return [str(names[int(k)]) if names is not None and 0 <= int(k) < len(names) else f"class {int(k)}"
            for k in labels]


def show_image(axes, image):
    """A picture in [0, 1] on ``axes``: (H, W) or (1, H, W) in gray, (3, H, W) in colour; no ticks."""
    image = numpy.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 3:
        axes.imshow(numpy.clip(image.transpose(1, 2, 0), 0, 1))
    else:
        axes.imshow(image, cmap="gray", vmin=0, vmax=1)
    axes.set_xticks([]), axes.set_yticks([])


def _moving_average(values, window):
    window = max(1, min(window, len(values)))
    kernel = numpy.ones(window) / window
    return numpy.convolve(values, kernel, mode="valid"), window


def loss_vs_iterations(path, train_losses, test_losses, iterations_per_epoch):
    """Per-iteration training loss, its moving average, and the test loss after each epoch."""
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.add_subplot()
    iterations = numpy.arange(1, len(train_losses) + 1)
    axes.plot(iterations, train_losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per iteration)")
    smooth, window = _moving_average(numpy.asarray(train_losses), 50)
    axes.plot(iterations[window - 1:], smooth, color="tab:blue", linewidth=1.8, label=f"train ({window}-iteration mean)")
    epochs_end = iterations_per_epoch * numpy.arange(1, len(test_losses) + 1)
    axes.plot(epochs_end, test_losses, "o-", color="tab:red", label="test (end of epoch)")
    axes.set(xlabel="iteration", ylabel="MSE loss", yscale="log")
    fit_title(figure, "Loss vs iterations")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def denoising_grid(path, noisy, denoised, clean, title="", names=None):
    """Rows noisy / denoised / clean, one column per image (each (H, W) in gray or (3, H, W) in colour, in
    [0, 1]), each column headed by its name in ``names`` (the image's class) where given. Returns the figure."""
    columns = len(clean)
    figure = Figure(figsize=(max(1.1 * columns, 4.5), 3.6 + 0.25 * (names is not None)), dpi=100)
    grid = figure.subplots(3, columns, squeeze=False)
    for row, (label, images) in enumerate((("noisy", noisy), ("denoised", denoised), ("clean", clean))):
        for column in range(columns):
            show_image(grid[row, column], images[column])
        grid[row, 0].set_ylabel(label)
    for column, name in enumerate(names or ()):
        name = str(name)
        grid[0, column].set_title(name if len(name) <= 14 else name[:13] + "…", fontsize="x-small")
    if title:
        fit_title(figure, title)
    figure.tight_layout()
    figure.savefig(path)
    return figure


def psnr_vs_level(path, rows):
    """PSNR of noisy and denoised images against the noise level, one line pair per noise type.

    rows: dicts with "noise", "level", "psnr_noisy", "psnr_denoised".
    """
    figure = Figure(figsize=(7, 4.5), dpi=100)
    axes = figure.add_subplot()
    for index, noise in enumerate(dict.fromkeys(r["noise"] for r in rows)):
        subset = [r for r in rows if r["noise"] == noise]
        levels = [r["level"] for r in subset]
        color = f"C{index}"
        axes.plot(levels, [r["psnr_denoised"] for r in subset], "o-", color=color, label=f"{noise}: denoised")
        axes.plot(levels, [r["psnr_noisy"] for r in subset], "x--", color=color, alpha=0.6, label=f"{noise}: noisy")
    axes.set(xlabel="noise level", ylabel="PSNR (dB)")
    fit_title(figure, "PSNR vs noise level")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
