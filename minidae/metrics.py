"""Image-quality metrics for batches of images in [0, 1], on NumPy or CuPy.

All take (N, H, W) grayscale or (N, C, H, W) arrays (C = 1, or 3 for colour) and return one number per
image; average them yourself (``mean``) or use :func:`summarize`.

    mse   (1 / CHW) sum (x - y)^2                (over every channel and pixel)
    psnr  10 log10(1 / mse)                      (data range 1; capped at 100 dB for mse = 0)
    ssim  mean over the valid 'same-size' window positions of
          ((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))
          with an 11 x 11 Gaussian window (sigma 1.5), C1 = (0.01)^2, C2 = (0.03)^2, computed for each
          channel on its own and averaged over the channels
          (Wang et al. 2004; skimage's structural_similarity with gaussian_weights=True,
          use_sample_covariance=False, data_range=1, and channel_axis for colour).
"""

import numpy

from . import backend

__all__ = ["mse", "psnr", "ssim", "sums", "summarize"]


def _images(x):
    """(N, C, H, W) float64 of (N, H, W) or (N, C, H, W) images."""
    xp = backend.array_module(x)
    x = xp.asarray(x, dtype=xp.float64)
    if x.ndim not in (3, 4):
        raise ValueError(f"metrics: expected images (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    return x[:, None] if x.ndim == 3 else x


def mse(x, y):
    """Mean squared error of each image pair over its channels and pixels: (N,) float64."""
    return ((_images(x) - _images(y)) ** 2).mean(axis=(1, 2, 3))


def psnr(x, y):
    """Peak signal-to-noise ratio in dB of each image pair (data range 1, MSE floored at 1e-10): (N,)."""
    xp = backend.array_module(x)
    return 10 * xp.log10(1 / xp.maximum(mse(x, y), 1e-10))


def _gaussian_valid(images, window):
    """Separable 'valid' filtering of (N, H, W) with a 1-D window: a loop over the taps."""
    k = len(window)
    h, w = images.shape[1] - k + 1, images.shape[2] - k + 1
    rows = sum(float(window[i]) * images[:, i:i + h, :] for i in range(k))
    return sum(float(window[j]) * rows[:, :, j:j + w] for j in range(k))


def ssim(x, y, window_size=11, sigma=1.5):
    """Structural similarity of each image pair, as the module docstring defines it (each channel on its own,
    then their mean): (N,) in [-1, 1]."""
    x, y = _images(x), _images(y)
    count, channels = x.shape[:2]
    if min(x.shape[2:]) < window_size:
        raise ValueError(f"ssim: images {x.shape[2:]} are smaller than the {window_size}x{window_size} window")
    x, y = x.reshape(count * channels, *x.shape[2:]), y.reshape(count * channels, *y.shape[2:])  # one plane each
    offsets = numpy.arange(window_size) - (window_size - 1) / 2
    window = numpy.exp(-offsets ** 2 / (2 * sigma ** 2))
    window /= window.sum()
    mu_x, mu_y = _gaussian_valid(x, window), _gaussian_valid(y, window)
    var_x = _gaussian_valid(x * x, window) - mu_x ** 2
    var_y = _gaussian_valid(y * y, window) - mu_y ** 2
    cov = _gaussian_valid(x * y, window) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(axis=(1, 2)).reshape(count, channels).mean(axis=1)


def sums(noisy, denoised, clean):
    """MSE, PSNR and SSIM of the noisy input and of the denoised output against clean, each summed
    over the batch and left on the device (0-d arrays): add them up over batches, read once."""
    result = {}
    for label, images in (("noisy", noisy), ("denoised", denoised)):
        result[f"mse_{label}"] = mse(images, clean).sum()
        result[f"psnr_{label}"] = psnr(images, clean).sum()
        result[f"ssim_{label}"] = ssim(images, clean).sum()
    return result


def summarize(noisy, denoised, clean):
    """Mean MSE, PSNR and SSIM of the noisy input and of the denoised output against clean."""
    return {key: float(value) / len(clean) for key, value in sums(noisy, denoised, clean).items()}
