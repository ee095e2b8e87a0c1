"""Image metrics: exact cases, known values, and skimage where it is installed."""
import numpy as np
import pytest

from minidae import backend, metrics


def pair(seed=0, shape=(3, 1, 28, 28)):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(size=shape)
    return clean, np.clip(clean + 0.2 * rng.normal(size=shape), 0, 1)


def test_identical_images(xp):
    clean, _ = pair()
    x = xp.asarray(clean)
    assert backend.to_numpy(metrics.mse(x, x)).tolist() == [0.0] * 3
    np.testing.assert_allclose(backend.to_numpy(metrics.ssim(x, x)), 1.0, rtol=1e-12)
    assert backend.to_numpy(metrics.psnr(x, x)).tolist() == [100.0] * 3


def test_mse_and_psnr_formulas(xp):
    clean = np.zeros((2, 28, 28))
    shifted = clean + np.array([0.1, 0.01])[:, None, None]
    np.testing.assert_allclose(backend.to_numpy(metrics.mse(xp.asarray(shifted), xp.asarray(clean))), [1e-2, 1e-4])
    np.testing.assert_allclose(backend.to_numpy(metrics.psnr(xp.asarray(shifted), xp.asarray(clean))), [20.0, 40.0])


def test_ssim_of_constant_images_depends_only_on_means(xp):
    a, b = np.full((1, 28, 28), 0.2), np.full((1, 28, 28), 0.6)
    c1 = 0.01 ** 2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
    np.testing.assert_allclose(backend.to_numpy(metrics.ssim(xp.asarray(a), xp.asarray(b))), [expected], rtol=1e-12)


def test_matches_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is an optional cross-check")
    clean, noisy = pair(1)
    ours = metrics.ssim(noisy, clean)
    theirs = [skimage_metrics.structural_similarity(n[0], c[0], gaussian_weights=True, sigma=1.5,
                                                    use_sample_covariance=False, data_range=1)
              for n, c in zip(noisy, clean)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    np.testing.assert_allclose(metrics.psnr(noisy, clean),
                               [skimage_metrics.peak_signal_noise_ratio(c, n, data_range=1) for n, c in zip(noisy, clean)])


def test_summarize_and_small_images():
    clean, noisy = pair()
    summary = metrics.summarize(noisy, clean, clean)
    assert summary["mse_denoised"] == 0 and summary["ssim_denoised"] == pytest.approx(1)
    assert summary["mse_noisy"] > 0 and summary["psnr_noisy"] < 100
    with pytest.raises(ValueError, match=r"smaller than the 11x11 window"):
        metrics.ssim(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)))
