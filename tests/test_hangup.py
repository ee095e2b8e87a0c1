"""SIGHUP (the terminal or the ssh session closed) stops a run as SIGTERM does: the checkpoint is written at the
step under way and ``--resume`` continues. Output to a terminal or pipe that has gone away (EIO, EPIPE) neither
stops that checkpoint nor turns the exit into a traceback. Real processes, real signals, real closed streams.
"""
import fcntl
import io
import os
import select
import signal
import subprocess
import sys
import termios
import time

import pytest

from minidae import backend, cli, train as training
from minidae.checkpoint import load_checkpoint
from cli_checks import own_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}


@pytest.fixture
def data(tmp_path, monkeypatch):
    """40 images of one's own (36 to train on: 5 steps of 8 an epoch), the public sets' cache an empty folder."""
    monkeypatch.setenv("MINIDAE_DATA", str(tmp_path / "public-cache"))
    backend.use("numpy", seed_value=0)
    return own_images(tmp_path / "x.npz", labels=False)


def start(data, out, **streams):
    """A real `minidae train` of many epochs (stopped by the test)."""
    return subprocess.Popen([sys.executable, "-m", "minidae", "train", "--data", str(data), "--epochs", "500",
                             "--batch-size", "8", "--out", str(out), "--no-progress", "--no-diagnostics"],
                            env={**ENV, "MINIDAE_DATA": os.environ["MINIDAE_DATA"]}, **streams)


def saved_epoch(checkpoint):
    return load_checkpoint(checkpoint)["epoch"] if checkpoint.exists() else 0


def wait_for_epoch(checkpoint, epoch, process, drain=None):
    """Wait until the run has saved ``epoch`` epochs (reading ``drain``, a terminal's master end, meanwhile)."""
    deadline = time.monotonic() + 120
    while saved_epoch(checkpoint) < epoch:
        assert process.poll() is None and time.monotonic() < deadline, f"the run ended early ({process.returncode})"
        if drain is not None and select.select([drain], [], [], 0.1)[0]:
            os.read(drain, 4096)
        else:
            time.sleep(0.1)


def resume_finishes(checkpoint):
    """--resume continues the stopped run: one more epoch, and its results are written."""
    state = load_checkpoint(checkpoint)
    assert state["iteration"] > 0 or state["epoch"] > 0
    epochs = state["epoch"] + 1
    assert cli.main(["train", "--resume", str(checkpoint), "--epochs", str(epochs), "--no-progress"]) == 0
    assert load_checkpoint(checkpoint)["epoch"] == epochs
    assert (checkpoint.parent / "metrics.json").exists()


def test_sighup_saves_a_checkpoint_even_with_its_stdout_closed(tmp_path, data):
    """`minidae train | less`, then the session closes: less goes (stdout's pipe is closed, so every later print
    raises EPIPE), then SIGHUP comes. The run saves the step it is at and exits 129 with its one line."""
    out = tmp_path / "run"
    process = start(data, out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("training on 36 images")
        process.stdout.close()  # the reader has gone: the next epoch's line meets a broken pipe
        wait_for_epoch(out / "checkpoint.npz", saved_epoch(out / "checkpoint.npz") + 2, process)
        process.send_signal(signal.SIGHUP)
        err = process.stderr.read()
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + signal.SIGHUP, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("stopped by SIGHUP (the terminal or session "
                                                                 "closed) "), err
    assert f"checkpoint saved to {out / 'checkpoint.npz'}; continue with --resume" in err or "after epoch" in err, err
    resume_finishes(out / "checkpoint.npz")


def test_closing_the_terminal_saves_a_checkpoint(tmp_path, data):
    """The run's terminal closes (its controlling pseudo-terminal's master end is closed): the kernel sends SIGHUP
    and every write to the terminal raises EIO. The run still saves its checkpoint and exits 129, no traceback."""
    out = tmp_path / "run"
    master, terminal = os.openpty()
    process = start(data, out, stdout=terminal, stderr=terminal, start_new_session=True,
                    preexec_fn=lambda: fcntl.ioctl(1, termios.TIOCSCTTY, 0))  # the run's controlling terminal
    os.close(terminal)
    try:
        wait_for_epoch(out / "checkpoint.npz", 1, process, drain=master)  # it is training
        os.close(master)  # the terminal hangs up
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + signal.SIGHUP
    resume_finishes(out / "checkpoint.npz")


def test_a_run_under_nohup_ignores_sighup(tmp_path, data, monkeypatch):
    """`nohup minidae train ...` asks for hangups to be ignored: the run must not install a handler over that."""
    real_step, calls = training._Run.step, []

    def step_then_sighup(self, noisy, clean):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGHUP)
        return real_step(self, noisy, clean)

    monkeypatch.setattr(training._Run, "step", step_then_sighup)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert cli.main(["train", "--data", str(data), "--epochs", "1", "--batch-size", "8", "--out",
                         str(tmp_path / "run"), "--no-progress", "--no-diagnostics"]) == 0
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert (tmp_path / "run" / "metrics.json").exists()


def test_output_that_has_gone_away_is_dropped_not_raised(tmp_path, data, monkeypatch, capsys):
    """A print meeting a hung-up terminal (EIO) during a run: the run goes on and ends as it would have."""
    class HungUp(io.TextIOBase):
        def write(self, text):
            raise OSError(5, "Input/output error")

        def flush(self):
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(sys, "stdout", HungUp())
    monkeypatch.setattr(sys, "stderr", HungUp())
    assert cli.main(["train", "--data", str(data), "--epochs", "1", "--batch-size", "8", "--out",
                     str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "metrics.json").exists()
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run")]) == 1  # its error line, dropped
