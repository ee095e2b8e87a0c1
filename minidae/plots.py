"""The figures a run leaves behind (matplotlib's object API: no global state, no display needed)."""
import numpy
from matplotlib.figure import Figure

__all__ = ["loss_vs_iterations", "denoising_grid", "psnr_vs_level"]


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
    axes.set(xlabel="iteration", ylabel="MSE loss", yscale="log", title="Loss vs iterations")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def denoising_grid(path, noisy, denoised, clean, title=""):
    """Rows noisy / denoised / clean, one column per image (each (H, W) in [0, 1])."""
    columns = len(clean)
    figure = Figure(figsize=(1.1 * columns, 3.6), dpi=100)
    grid = figure.subplots(3, columns, squeeze=False)
    for row, (label, images) in enumerate((("noisy", noisy), ("denoised", denoised), ("clean", clean))):
        for column in range(columns):
            axes = grid[row, column]
            axes.imshow(images[column], cmap="gray", vmin=0, vmax=1)
            axes.set_xticks([]), axes.set_yticks([])
        grid[row, 0].set_ylabel(label)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)


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
    axes.set(xlabel="noise level", ylabel="PSNR (dB)", title="PSNR vs noise level")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
