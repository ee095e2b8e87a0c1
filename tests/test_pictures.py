"""Pictures that read at a glance (issue 27, items 3 and 4), checked by what they draw, not by their pixels.

layers.png: one row of small panels per layer, a point for every record (a run of one step draws), zeros and
missing values marked at the edge, a zero-initialised bias that cannot flatten the update ratios; class names
from the data; titles within their figures; inspect with a decode that raises, and with encode alone.
"""
import json

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minidae import backend, cli, inspection, models, nn, optim, plots
from minidae.diagnostics import RATIO_CAP, Diagnostics, layer_rows, plot_layers


def record_of(model, steps, x, lr=1e-3, last=None):
    """The diagnostics of ``steps`` Adam steps of ``model`` on ``x`` (its own target), every 25 and the last."""
    optimizer, loss = optim.Adam(model.parameters(), lr=lr), nn.MSELoss()
    recorder = Diagnostics(model, every=25, last=steps - 1 if last is None else last)
    for iteration in range(steps):
        recorder.before_step(iteration)
        optimizer.zero_grad()
        loss(model(x), x)
        model.backward(loss.backward())
        optimizer.step()
        recorder.after_step(iteration, x)
    return recorder.as_dict()


def images(count=4, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(size=(count, channels, 28, 28)).astype(np.float32)


def test_one_row_of_panels_per_layer_with_its_activation_beside():
    backend.use("numpy", seed_value=0)
    record = record_of(models.conv_dae(), 1, images())
    rows = layer_rows(record)
    assert [r[0] for r in rows] == ["conv1", "conv2", "conv3", "l1", "l2", "conv4", "conv5", "conv6"]
    assert rows[0] == ("conv1", ["conv1.weight", "conv1.bias"], ["conv1", "relu1"])
    assert rows[-1] == ("conv6", ["conv6.weight", "conv6.bias"], ["conv6", "sigmoid"])
    pooled = layer_rows(record_of(models.conv_ae_pool(), 1, images()))
    assert pooled[0] == ("conv1", ["conv1.weight", "conv1.bias"], ["conv1", "relu1", "pool"])
    plain = record_of(nn.Sequential(nn.Dropout(0.0), nn.Flatten(), nn.Linear(784, 784)), 1, images().reshape(4, 784))
    assert layer_rows(plain) == [("0", [], ["0"]), ("2", ["2.weight", "2.bias"], ["2"])]


def test_a_run_of_one_step_draws_a_point_in_every_panel(tmp_path):
    """The issue: layers.png was empty for runs shorter than 25 steps (one record, and lines of one point)."""
    backend.use("numpy", seed_value=0)
    record = record_of(models.conv_dae(), 1, images())
    assert record["iterations"] == [0]
    drawn = plot_layers(tmp_path / "layers.png", record, "one step")
    assert len(drawn) == 8
    for layer, panels in drawn.items():
        for panel, series in panels.items():
            assert series and all(counts["points"] == 1 for counts in series.values()), (layer, panel, series)
    record = record_of(models.conv_dae(), 7, images())
    assert record["iterations"] == [0, 6], "the first step and the last"


def test_a_zero_initialised_bias_is_marked_at_the_top_and_cannot_flatten_the_others(tmp_path):
    backend.use("numpy", seed_value=0)
    model = models.dense_ae()  # Keras's init: every bias starts at exactly zero
    record = record_of(model, 2, images().reshape(4, 1, 28, 28))
    assert record["update_ratio"]["fc1.bias"][0] is None, "infinite: a ratio to a norm of zero (null in JSON)"
    assert 0 < record["update_ratio"]["fc1.bias"][1] < RATIO_CAP
    json.dumps(record, allow_nan=False)
    figure_rows = plot_layers(tmp_path / "layers.png", record)
    ratio = figure_rows["fc1"]["update_ratio"]
    assert ratio["bias"] == {"points": 1, "zero": 0, "missing": 0, "above": 1}
    assert ratio["weight"]["points"] == 2


def test_the_update_ratio_panels_scale_to_the_values_they_draw(tmp_path, monkeypatch):
    """The panel's range comes from the values it draws (and the 1e-3 level), never from a ratio marked above
    the cap: conv1's ratios of about 1e-2 are not squeezed against the bottom by a huge one."""
    captured = []
    monkeypatch.setattr(Figure, "savefig", lambda self, path, **k: captured.append(self))
    backend.use("numpy", seed_value=0)
    record = record_of(models.conv_dae(), 3, images())
    record["update_ratio"]["conv1.bias"][0] = 1e27  # what a bias of exactly zero gave before: ‖Δb‖ / 1e-30
    drawn = plot_layers("unused.png", record)
    assert drawn["conv1"]["update_ratio"]["bias"]["above"] == 1
    figure = captured[0]
    conv1_ratio = figure.axes[1]
    assert conv1_ratio.get_title() == "update ratio ‖Δw‖ / ‖w‖" and conv1_ratio.get_yscale() == "log"
    low, high = conv1_ratio.get_ylim()
    assert high <= 1.0 and low >= 1e-4, (low, high)


def test_a_dead_network_is_drawn_with_its_zeros_marked(tmp_path):
    """conv1's ReLU off for every input: no gradient flows to conv1 (norms exactly 0), relu1's output is all
    zeros (standard deviation 0, fraction of zeros 1): each is a mark, not a blank panel."""
    backend.use("numpy", seed_value=3)
    model = models.conv_dae()
    model.conv1.bias.data[...] = -100
    record = record_of(model, 2, images(seed=2), lr=1e-1)
    assert record["gradient_norm"]["conv1.weight"] == [0.0, 0.0]
    drawn = plot_layers(tmp_path / "layers.png", record)
    conv1 = drawn["conv1"]
    assert conv1["gradient_norm"]["weight"] == {"points": 0, "zero": 2, "missing": 0, "above": 0}
    assert conv1["update_ratio"]["weight"]["zero"] == 2, "no update either"
    assert conv1["std"]["relu1"]["zero"] == 2 and conv1["zeros"]["relu1"]["points"] == 2
    assert record["output"]["relu1"]["zeros"] == [1.0, 1.0]


def test_a_parameter_no_backward_reached_is_marked_missing(tmp_path):
    backend.use("numpy", seed_value=0)
    record = record_of(models.conv_dae(), 1, images())
    record["gradient_norm"]["l2.bias"] = [None]
    assert plot_layers(tmp_path / "layers.png", record)["l2"]["gradient_norm"]["bias"]["missing"] == 1


def title_fits(figure):
    """True where the figure's title lies within the figure, drawn by Agg (the text's extent, not its pixels)."""
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    box, frame = figure._suptitle.get_window_extent(renderer), figure.bbox
    return box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1 and box.y1 <= frame.y1 + 1


def test_titles_fit_their_figures(tmp_path):
    backend.use("numpy", seed_value=0)
    long_name = "my_very_long_factory_file_name_for_pictures.py:build_the_model"
    one = np.random.default_rng(0).uniform(size=(1, 28, 28))
    figures = [plots.denoising_grid(tmp_path / "d.png", one, one, one, title=f"{long_name}: gaussian noise, level 0.5"),
               plots.denoising_grid(tmp_path / "c.png", *(np.zeros((2, 3, 28, 28)),) * 3, title="colour",
                                    names=["stereo_motorcycle", "chelsea"])]
    small = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1), nn.Sigmoid())
    figures.append(inspection.filters_plot(tmp_path / "f.png", small))
    figures.append(inspection.feature_maps_plot(tmp_path / "m.png", small, np.zeros((28, 28), np.uint8)))
    figures.append(inspection.interpolation_plot(tmp_path / "i.png", [("a", "b", np.zeros((3, 28, 28)))], 3,
                                                 title=f"{long_name}: decoded between codes"))
    figures.append(inspection.latent_plot(tmp_path / "l.png", np.zeros((2, 2)), np.array([0, 1]), [0.5, 0.5],
                                          title=f"{long_name}: test codes"))
    for figure in figures:
        assert title_fits(figure), figure._suptitle.get_text()
    assert figures[1].axes[0].get_title() == "stereo_motorc…" and figures[1].axes[1].get_title() == "chelsea"


def test_class_names_come_from_the_data_never_digit_for_other_data(tmp_path):
    assert plots.class_names([0, 2], ["cat", "dog", "owl"]) == ["cat", "owl"]
    assert plots.class_names([0, 3]) == ["class 0", "class 3"]
    figure = inspection.latent_plot(tmp_path / "l.png", np.zeros((3, 2)), np.array([0, 1, 1]), [0.6, 0.3],
                                    names=["discs", "squares"])
    legend = figure.axes[0].get_legend()
    assert legend.get_title().get_text() == "class" and [t.get_text() for t in legend.get_texts()] == ["discs",
                                                                                                       "squares"]
    unnamed = inspection.latent_plot(tmp_path / "u.png", np.zeros((2, 2)), np.array([4, 7]), [0.6, 0.3])
    assert [t.get_text() for t in unnamed.axes[0].get_legend().get_texts()] == ["class 4", "class 7"]
    mnist = inspection.latent_plot(tmp_path / "m.png", np.zeros((2, 2)), np.array([4, 7]), [0.6, 0.3],
                                   names=[str(d) for d in range(10)], kind="digit")
    assert mnist.axes[0].get_legend().get_title().get_text() == "digit"


FACTORIES = '''
import numpy as np
from minidae import nn


class Broken(nn.Module):
    """A denoiser whose decode raises (a bug of the user's), and one with encode alone."""

    def __init__(self, decode_raises=True):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1),
                                 nn.Sigmoid())
        self.decode_raises = decode_raises

    def encode(self, x):
        return self.net[0](x)

    def forward(self, ctx, x):
        return self.net(x)

    def backprop(self, ctx, dy):
        return self.net.backward(dy)


class WithDecode(Broken):
    def decode(self, z):
        raise RuntimeError("decode is not written yet")


def broken():
    return WithDecode()


def encode_only():
    return Broken()
'''


@pytest.mark.parametrize("factory", ["broken", "encode_only"])
def test_inspect_of_a_model_whose_decode_raises_or_that_has_encode_alone(tmp_path, capsys, monkeypatch, factory):
    """A decode that raises is one line naming the model and the error (not a traceback); with encode alone (or
    a decode that raises) the latent plot and the probe are still drawn."""
    monkeypatch.setenv("MINIDAE_DATA", str(tmp_path / "cache"))
    (tmp_path / "mine.py").write_text(FACTORIES)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", images=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
             labels=np.arange(30) % 3)
    spec = f"{tmp_path / 'mine.py'}:{factory}"
    assert cli.main(["train", "--data", str(tmp_path / "data.npz"), "--model", spec, "--epochs", "1", "--batch-size",
                     "9", "--test-fraction", "0.4", "--out", str(tmp_path / "run"), "--no-progress",
                     "--no-diagnostics"]) == 0
    capsys.readouterr()
    status = cli.main(["inspect", str(tmp_path / "run" / "checkpoint.npz"), "--model", spec, "--probe-epochs", "2"])
    out, err = capsys.readouterr()
    assert status == 0 and err == "", err
    report = json.loads((tmp_path / "run" / "inspect.json").read_text())
    assert {"latent.png", "filters.png", "feature_maps.png"} <= set(report["written"])
    assert "interpolation.png" not in report["written"] and "probe_accuracy_code" in report
    reason = report["skipped"]["interpolation.png"]
    if factory == "broken":
        assert reason == "the model mine.py:broken's decode raised RuntimeError: decode is not written yet"
    else:
        assert reason == "mine.py:encode_only has no decode(z) to draw codes with"
    assert f"no interpolation.png: {reason}\n" in out and out.count("\n") == 3, out
    single = json.loads(json.dumps(inspection.inspect_model(
        models.conv_dae(), (np.zeros((4, 28, 28), np.uint8), np.zeros(4, int)), (np.zeros((3, 28, 28), np.uint8),
                                                                                  np.zeros(3, int)),
        str(tmp_path), probe_epochs=1)))
    assert single["skipped"]["interpolation.png"].startswith("the test images hold fewer than two classes"), \
        "a test set of one class: no pair to draw between, said so (it crashed inspect before)"


def test_the_diagnostics_tools_sigmoid_network_builds():
    """docs/tools/diagnostics_runs.py's sigmoid_dae (docs/backprop.md's third run): conv_dae with a Sigmoid at each
    ReLU's place, named for it, with conv_dae's weights' names (it assigned to Chain.layers, which is no longer
    settable)."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tools" / "diagnostics_runs.py"
    spec = importlib.util.spec_from_file_location("diagnostics_runs", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    model = tool.sigmoid_dae()
    names = [name for name, _ in model.named_children()]
    assert names[:3] == ["conv1", "sigmoid1", "conv2"] and not any(isinstance(m, nn.ReLU) for m in model.layers)
    assert sorted(model.state_dict()) == sorted(models.conv_dae().state_dict())
    assert model(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 1, 28, 28)
