"""Nothing a user made is lost or silently replaced, and every failure of a run ends in one line (issue 17).

Full disks and read-only directories are simulated by making the write fail (the tests run as root, where
chmod does not stop a write): each fake fails the way the operating system does, with the same errno.
"""
import errno
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from minidae import cli, optim, plots, train as training
from minidae.checkpoint import load_checkpoint
from cli_checks import one_line, full_disk

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "train_conv_dae.py")


@pytest.fixture(autouse=True)
def small_plots(monkeypatch):
    """The run's figures as tiny blank ones (matplotlib's layout of the real ones takes a second a run)."""
    def blank(path, *args, **kwargs):
        plots.Figure(figsize=(0.5, 0.5), dpi=20).savefig(path)

    monkeypatch.setattr(plots, "loss_vs_iterations", blank)
    monkeypatch.setattr(plots, "denoising_grid", blank)
    monkeypatch.setattr(plots, "psnr_vs_level", blank)


def quick(out, mnist_root, **overrides):
    settings = dict(epochs=1, train_samples=128, test_samples=16, data_dir=mnist_root,
                    out=None if out is None else str(out), progress=False)
    settings.update(overrides)
    return training.TrainConfig(**settings)


def argv(out, mnist_root, *extra):
    return ["train", "--train-samples", "128", "--test-samples", "16", "--epochs", "1", "--data-dir", mnist_root,
            "--out", str(out), "--no-progress", *extra]


# ------------------------------------------------------------------------------------------ divergence

def test_the_issues_divergence_command_leaves_no_nan_checkpoint_behind(tmp_path, mnist_root, capsys):
    # One batch per epoch: the step that breaks the weights is the epoch's last, and its loss still looks finite.
    code = cli.main(["train", "--lr", "1e38", "--train-samples", "64", "--batch-size", "64", "--epochs", "2",
                     "--test-samples", "16", "--data-dir", mnist_root, "--out", str(tmp_path / "run"), "--no-progress"])
    err = one_line(capsys)
    assert code == 1 and "Try a smaller --lr" in err
    checkpoint = tmp_path / "run" / "checkpoint.npz"
    if checkpoint.exists():  # whatever is there must be a good state, and the message names only what exists
        assert np.isfinite(load_checkpoint(checkpoint)["test_losses"]).all()
    else:
        assert "No checkpoint was written" in err and str(checkpoint) not in err


def poison_after(step_number, what):
    """Adam.step that, after its ``step_number``-th call, fills the first parameter or its first moment with NaN."""
    real_step, calls = optim.Adam.step, {"n": 0}

    def step(self):
        real_step(self)
        calls["n"] += 1
        if calls["n"] == step_number:
            target = self.params[0].data if what == "weights" else self.state[self.params[0]]["exp_avg"]
            target[...] = np.nan
    return step


def test_a_resumed_run_that_diverges_in_its_last_step_keeps_the_good_checkpoint(tmp_path, mnist_root, capsys,
                                                                                 monkeypatch):
    assert cli.main(argv(tmp_path, mnist_root)) == 0
    checkpoint = tmp_path / "checkpoint.npz"
    good = checkpoint.read_bytes()
    monkeypatch.setattr(optim.Adam, "step", poison_after(2, "weights"))  # 2 steps per epoch: epoch 2's last
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(checkpoint), "--epochs", "2", "--data-dir", mnist_root,
                     "--no-progress"]) == 1
    err = one_line(capsys)
    assert f"The last good checkpoint is {checkpoint} (epoch 1)" in err
    assert checkpoint.read_bytes() == good and not (tmp_path / "metrics.json").read_text().count("NaN")


def test_nan_optimizer_state_is_never_saved(tmp_path, mnist_root, monkeypatch):
    # The weights are still finite after the step that breaks a moment; the checkpoint must not take it.
    monkeypatch.setattr(optim.Adam, "step", poison_after(4, "moments"))  # epoch 2's last step
    with pytest.raises(training.TrainingDiverged, match=r"became nan or inf in epoch 2 \(optim\..*\); stopped "
                                                        r"without saving them. The last good checkpoint is .*"
                                                        r"checkpoint.npz \(epoch 1\)"):
        training.train(quick(tmp_path, mnist_root, epochs=2))
    assert load_checkpoint(tmp_path / "checkpoint.npz")["epoch"] == 1


def test_metrics_json_is_strict_json(tmp_path, mnist_root, monkeypatch):
    real_evaluate = training.evaluate

    def with_a_nan(*args, **kwargs):
        return dict(real_evaluate(*args, **kwargs), ssim_noisy=float("nan"))

    monkeypatch.setattr(training, "evaluate", with_a_nan)
    training.train(quick(tmp_path, mnist_root))

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["test"]["ssim_noisy"] is None and metrics["test"]["mse_denoised"] > 0


# ------------------------------------------------------------------------------------------ other runs' files

def test_a_new_run_never_replaces_another_runs_files(tmp_path, mnist_root, capsys):
    assert cli.main(argv(tmp_path, mnist_root)) == 0
    before = {name: (tmp_path / name).read_bytes() for name in ("checkpoint.npz", "metrics.json", "denoising.png")}
    capsys.readouterr()
    assert cli.main(argv(tmp_path, mnist_root, "--seed", "1")) == 1
    err = one_line(capsys)
    assert f"--out {tmp_path} already holds a run" in err and "--resume" in err and "--force" in err
    assert all((tmp_path / name).read_bytes() == data for name, data in before.items())
    (tmp_path / "eval.json").write_text("{}")  # `minidae eval` of the old checkpoint
    assert cli.main(argv(tmp_path, mnist_root, "--seed", "1", "--force")) == 0
    assert load_checkpoint(tmp_path / "checkpoint.npz")["config"]["seed"] == 1
    assert not (tmp_path / "eval.json").exists()  # it belonged to the checkpoint --force replaced


def test_runs_started_in_the_same_second_get_a_directory_each(tmp_path, mnist_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda *args: "20260101-120000")
    for seed in (0, 1):
        training.train(quick(None, mnist_root, seed=seed))
    seeds = {load_checkpoint(tmp_path / "runs" / name / "checkpoint.npz")["config"]["seed"]
             for name in os.listdir(tmp_path / "runs")}
    assert seeds == {0, 1}


def test_metrics_and_plots_are_never_left_half_written(tmp_path, mnist_root, capsys, monkeypatch):
    assert cli.main(argv(tmp_path, mnist_root)) == 0
    checkpoint = str(tmp_path / "checkpoint.npz")

    def half_then_full(obj, f, **kwargs):
        f.write('{"recipe": ')
        full_disk()

    def png_half_then_full(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG")
        full_disk()

    for target, fake, name in ((json, half_then_full, "metrics.json"),
                               (plots.Figure, png_half_then_full, "loss_vs_iters.png")):
        before = (tmp_path / name).read_bytes()
        with monkeypatch.context() as patch:
            patch.setattr(target, "dump" if target is json else "savefig", fake)
            capsys.readouterr()
            assert cli.main(["train", "--resume", checkpoint, "--data-dir", mnist_root, "--no-progress"]) == 1
            assert f"{name}: No space left on device; free some disk space" in one_line(capsys)
        assert (tmp_path / name).read_bytes() == before
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_eval_json_is_never_left_half_written(tmp_path, mnist_root, capsys, monkeypatch):
    training.train(quick(tmp_path, mnist_root))
    command = ["eval", str(tmp_path / "checkpoint.npz"), "--noises", "mask", "--test-samples", "8",
               "--data-dir", mnist_root]
    assert cli.main(command) == 0
    before = (tmp_path / "eval.json").read_bytes()

    def half_then_full(obj, f, **kwargs):
        f.write('{"rows": ')
        full_disk()

    monkeypatch.setattr(json, "dump", half_then_full)
    capsys.readouterr()
    assert cli.main(command) == 1
    assert "eval.json: No space left on device" in one_line(capsys)
    assert (tmp_path / "eval.json").read_bytes() == before


# ------------------------------------------------------------------------------------------ the output directory

def test_a_read_only_out_is_found_before_the_first_step_and_leaves_nothing(tmp_path, mnist_root, capsys,
                                                                           monkeypatch):
    out = tmp_path / "new" / "run"
    real_mkstemp, steps = tempfile.mkstemp, []

    def read_only(*args, dir=None, **kwargs):  # as a read-only directory answers (root ignores chmod)
        if dir is not None and os.path.abspath(dir).startswith(str(tmp_path / "new")):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir, "x"))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    real_step = training._Run.step
    monkeypatch.setattr(training._Run, "step", lambda self, *a: steps.append(1) or real_step(self, *a))
    assert cli.main(argv(out, mnist_root)) == 1
    assert f"--out {out}: cannot write there (Permission denied)" in one_line(capsys)
    assert steps == [] and not (tmp_path / "new").exists()


def test_a_failed_run_leaves_no_empty_directory(tmp_path, mnist_root, capsys, monkeypatch):
    from minidae.data import DatasetUnavailable

    def unavailable(*args, **kwargs):
        raise DatasetUnavailable("mnist: could not obtain it")

    monkeypatch.setattr(training, "load_split", unavailable)
    assert cli.main(argv(tmp_path / "a" / "b", mnist_root)) == 1
    assert "could not obtain it" in one_line(capsys)
    assert os.listdir(tmp_path) == []


def test_the_example_reports_disk_errors_in_one_line(tmp_path, mnist_root, capsys, monkeypatch):
    main = runpy.run_path(EXAMPLE)["main"]
    options = ["--epochs", "1", "--train-samples", "128", "--test-samples", "16", "--data-dir", mnist_root,
               "--no-progress"]
    (tmp_path / "a-file").write_text("")
    assert main(options + ["--out", str(tmp_path / "a-file")]) == 1
    assert f"--out {tmp_path / 'a-file'} is a file, not a directory" in one_line(capsys)

    monkeypatch.setattr(np, "savez", full_disk)
    assert main(options + ["--out", str(tmp_path / "run")]) == 1
    assert f"{tmp_path / 'run' / 'checkpoint.npz'}: No space left on device; free some disk space" in one_line(capsys)


def test_temporaries_a_kill_left_are_removed_by_the_next_run(tmp_path, mnist_root):
    training.train(quick(tmp_path, mnist_root))
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()  # temporaries carry their process's id: those of a process that ended go
    for name in (".checkpoint-{}-k1ll3d00.npz", ".metrics-{}-k1ll3d00.json", ".denoising-{}-k1ll3d00.png"):
        (tmp_path / name.format(killed.pid)).write_bytes(b"half")
    (tmp_path / ".mine").write_text("not minidae's")
    training.train(quick(tmp_path, mnist_root, epochs=2, resume=str(tmp_path / "checkpoint.npz")))
    assert sorted(name for name in os.listdir(tmp_path) if name.startswith(".")) == [".mine"]


# ------------------------------------------------------------------------------------------ signals

def test_sigterm_saves_like_ctrl_c_and_the_resumed_run_matches(tmp_path, mnist_root, monkeypatch):
    training.train(quick(tmp_path / "straight", mnist_root, epochs=2))
    real_step, calls = training._Run.step, {"n": 0}

    def step_then_sigterm(self, noisy, clean):
        calls["n"] += 1
        if calls["n"] == 3:  # the first step of epoch 2
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, noisy, clean)

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached the default handler: the run would have been killed")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        monkeypatch.setattr(training._Run, "step", step_then_sigterm)
        with pytest.raises(training.Interrupted, match=r"stopped by SIGTERM in epoch 2 after iteration 1; checkpoint "
                                                       r"saved") as stopped:
            training.train(quick(tmp_path / "split", mnist_root, epochs=2))
        assert stopped.value.exit_code == 143
        assert signal.getsignal(signal.SIGTERM) is unhandled  # given back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert load_checkpoint(tmp_path / "split" / "checkpoint.npz")["iteration"] == 1
    monkeypatch.setattr(training._Run, "step", real_step)
    training.train(quick(None, mnist_root, epochs=2, resume=str(tmp_path / "split" / "checkpoint.npz")))
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.npz")["model"]
    split = load_checkpoint(tmp_path / "split" / "checkpoint.npz")["model"]
    assert all(np.array_equal(straight[k], split[k]) for k in straight)


def test_ctrl_c_during_the_last_evaluation_is_honoured(tmp_path, mnist_root, capsys, monkeypatch):
    real_evaluate = training.evaluate

    def evaluate_then_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", evaluate_then_ctrl_c)
    assert cli.main(argv(tmp_path, mnist_root)) == 130
    err = one_line(capsys)
    assert f"interrupted after epoch 1; checkpoint saved to {tmp_path / 'checkpoint.npz'}" in err
    assert "metrics.json and the plots were not written" in err and not (tmp_path / "metrics.json").exists()
    monkeypatch.setattr(training, "evaluate", real_evaluate)
    assert cli.main(["train", "--resume", str(tmp_path / "checkpoint.npz"), "--data-dir", mnist_root,
                     "--no-progress"]) == 0
    assert (tmp_path / "metrics.json").exists()


def ctrl_c(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)


def second_ctrl_c(monkeypatch):
    real_step = training._Run.step

    def step(self, noisy, clean):
        ctrl_c()
        ctrl_c()  # the second one interrupts at once
        return real_step(self, noisy, clean)
    monkeypatch.setattr(training._Run, "step", step)


WHERE = {
    "a second Ctrl-C": (second_ctrl_c, r"interrupted at once \(a second signal\) in epoch 1; the step under way was "
                                       r"not saved. No checkpoint was written$"),
    "data loading": (lambda patch: patch.setattr(training, "load_split", ctrl_c),
                     r"interrupted while loading the data; nothing was saved$"),
    "final plotting": (lambda patch: patch.setattr(plots, "denoising_grid", ctrl_c),
                       r"interrupted while writing the results: .* holds checkpoint.npz, metrics.json, "
                       r"loss_vs_iters.png \(training is complete\); denoising.png, layers.png not written: --resume "
                       r".*checkpoint.npz writes them$"),
}


@pytest.mark.parametrize("where", list(WHERE))
def test_an_interruption_anywhere_says_what_was_saved(tmp_path, mnist_root, capsys, monkeypatch, where):
    arrange, message = WHERE[where]
    arrange(monkeypatch)
    assert cli.main(argv(tmp_path / "run", mnist_root)) == 130
    assert __import__("re").search(message, one_line(capsys))


# ------------------------------------------------------------------------------------------ resume and memory

def test_resume_refuses_recipe_flags_that_differ_from_the_checkpoint(tmp_path, mnist_root, capsys):
    training.train(quick(tmp_path, mnist_root))
    resume = ["train", "--resume", str(tmp_path / "checkpoint.npz"), "--epochs", "2", "--data-dir", mnist_root,
              "--no-progress"]
    assert cli.main(resume + ["--lr", "0.01", "--batch-size", "32", "--noise", "mask", "--seed", "3"]) == 1
    err = one_line(capsys)
    for named in ("--lr 0.001 (not 0.01)", "--batch-size 64 (not 32)", "--noise gaussian (not mask)",
                  "--seed 0 (not 3)"):
        assert named in err
    assert load_checkpoint(tmp_path / "checkpoint.npz")["epoch"] == 1
    assert cli.main(resume + ["--lr", "0.001", "--batch-size", "64"]) == 0  # the same values are no change


def test_out_of_memory_is_one_line_naming_the_batch_size(tmp_path, mnist_root, capsys, monkeypatch):
    def out_of_memory(self, noisy, clean):
        raise MemoryError("Unable to allocate 11.2 GiB for an array with shape (60000, 16, 28, 28) and data type "
                          "float32")

    monkeypatch.setattr(training._Run, "step", out_of_memory)
    assert cli.main(argv(tmp_path / "run", mnist_root)) == 1
    assert "out of memory (Unable to allocate 11.2 GiB" in one_line(capsys)
    assert not (tmp_path / "run").exists()
    assert cli.main(["summary", "conv_dae", "--batch-size", str(10 ** 12)]) == 1  # NumPy's own _ArrayMemoryError
    assert "out of memory (Unable to allocate" in one_line(capsys)
