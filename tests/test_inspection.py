"""encode/decode of the six presets, and minidae.inspection on small data: the code's PCA, interpolations,
filters, feature maps and the linear probe."""
import json

import numpy as np
import pytest

from minidae import backend, evaluating, inspection, models, nn
from minidae.data import load_mnist

CODE_SHAPES = {"conv_dae": (256,), "fc_dae": (128,), "dense_ae": (32,), "fc_ae": (128,), "conv_ae_pool": (64, 7, 7),
               "conv_denoiser": (8, 3, 3)}


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_preset_says_where_its_code_is(xp, name):
    model = models.build(name)
    x = xp.asarray(np.random.default_rng(0).uniform(size=(3, 1, 28, 28)), dtype=np.float32)
    with evaluating(model):
        z = model.encode(x)
        assert tuple(z.shape) == (3,) + CODE_SHAPES[name]
        assert bool((model.decode(z) == model(x)).all())  # forward is decode(encode(x))


def test_pca_finds_the_axes_of_most_variance():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(500, 3)) * [10.0, 1.0, 0.1]
    points, explained = inspection.pca(features)
    assert points.shape == (500, 2) and explained[0] > 0.95 and explained[0] > explained[1]
    assert abs(abs(np.corrcoef(points[:, 0], features[:, 0])[0, 1]) - 1) < 1e-6


def test_the_linear_probe_separates_what_is_linearly_separable():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, size=600)
    centres = np.array([[3.0, 0], [0, 3.0], [-3.0, -3.0]])
    features = centres[labels] + rng.normal(size=(600, 2)) * 0.5
    assert inspection.linear_probe(features[:400], labels[:400], features[400:], labels[400:], epochs=150) > 0.97
    noise = rng.normal(size=(600, 2))  # features that carry nothing: chance
    assert inspection.linear_probe(noise[:400], labels[:400], noise[400:], labels[400:], epochs=5) < 0.55


@pytest.mark.parametrize("name", ["conv_dae", "fc_ae"])
def test_inspect_model_writes_its_figures_and_probe(tmp_path, mnist_root, name):
    backend.use("numpy", seed_value=0)
    train_images, train_labels = load_mnist("train", root=mnist_root, progress=False)
    test_images, test_labels = load_mnist("test", root=mnist_root, progress=False)
    result = inspection.inspect_model(models.build(name), (train_images[:600], train_labels[:600]),
                                      (test_images[:200], test_labels[:200]), str(tmp_path), probe_epochs=3)
    assert result["code_size"] == int(np.prod(CODE_SHAPES[name]))
    assert 0.3 < result["probe_accuracy_pixels"] <= 1 and 0.1 < result["probe_accuracy_code"] <= 1
    for figure in result["written"]:
        assert (tmp_path / figure).stat().st_size > 1000
    assert ("feature_maps.png" in result["written"]) == (name == "conv_dae")
    json.dumps(result)


def test_a_model_without_encode_is_named():
    with pytest.raises(ValueError, match="has no encode: define encode"):
        inspection.codes(nn.Sequential(nn.Flatten()), np.zeros((1, 28, 28), np.uint8))
