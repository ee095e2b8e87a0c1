"""One run per output folder (issue 24): a run, new or resumed, holds its folder for its whole life with a lock
file holding its process id; a second run into a held folder is refused in one line naming the holder; the lock
of a process that was killed is taken over with a line saying so; temporaries of another live process are never
removed. Other processes here are real ones (subprocesses), signalled and killed as a user would."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from minidae import backend, cli, train as training
from minidae.checkpoint import load_checkpoint
from minidae.files import LOCK_NAME, FolderInUse, FolderLock
from cli_checks import one_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}
HOLD = "import sys, time; from minidae.files import FolderLock; FolderLock(sys.argv[1]).acquire(); " \
       "print('held', flush=True); time.sleep(120)"


@pytest.fixture
def data(tmp_path, monkeypatch):
    """28 x 28 images of one's own (x.npy): no public data set is needed."""
    monkeypatch.setenv("MINIDAE_DATA", str(tmp_path / "public-cache"))
    backend.use("numpy", seed_value=0)
    path = tmp_path / "x.npy"
    np.save(path, (np.random.default_rng(0).random((40, 28, 28)) * 255).astype(np.uint8))
    return path


def train_argv(data, out, *extra):
    return ["train", "--data", str(data), "--epochs", "1", "--batch-size", "8", "--out", str(out), "--no-progress",
            "--no-diagnostics", *extra]


@pytest.fixture
def holder():
    """Start a real process that holds a folder's lock (or nothing, for a live process id); kill them all after."""
    started = []

    def start(folder=None):
        if folder is None:
            process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        else:
            process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                                       env=ENV)
            assert process.stdout.readline().strip() == "held"
        started.append(process)
        return process
    yield start
    for process in started:
        process.kill()
        process.wait()


def dead_pid():
    """The id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(tmp_path, data, capsys, holder):
    out = tmp_path / "same"
    out.mkdir()
    other = holder(out)
    for extra in ([], ["--force"]):
        assert cli.main(train_argv(data, out, *extra)) == 1
        err = one_line(capsys)
        assert f"--out {out}: another run is writing there (process {other.pid} holds {out / LOCK_NAME})" in err
        assert "wait for it to end, or choose another --out" in err
    assert sorted(os.listdir(out)) == [LOCK_NAME], "the refused run wrote nothing"
    assert other.poll() is None


def test_the_issues_two_runs_in_one_out(tmp_path, data, capsys):
    """The issue's commands, the first a real process: the second is refused; Ctrl-C ends the first, which
    releases the folder on its way out."""
    out = tmp_path / "same"
    first = subprocess.Popen([sys.executable, "-m", "minidae", *train_argv(data, out, "--epochs", "500")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert first.stdout.readline().startswith("training on 36 images")  # the lock is taken before this line
        assert first.stdout.readline().startswith("epoch 1/500: ")  # and it trains: Ctrl-C will save a checkpoint
        assert cli.main(train_argv(data, out, "--preset", "fc_ae")) == 1
        assert f"another run is writing there (process {first.pid} holds" in one_line(capsys)
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 130 and "checkpoint saved to" in err, err
    assert not (out / LOCK_NAME).exists(), "Ctrl-C released the folder"
    assert load_checkpoint(out / "checkpoint.npz")["config"]["model"] == "conv_dae", "the first run's files only"
    # it stopped inside epoch 2 (the line of epoch 1 was read): --epochs 2 finishes that epoch
    assert cli.main(["train", "--resume", str(out / "checkpoint.npz"), "--epochs", "2", "--no-progress"]) == 0


def test_the_lock_of_a_killed_process_is_taken_over_with_a_line(tmp_path, data, capsys, holder):
    out = tmp_path / "run"
    out.mkdir()
    killed = holder(out)
    killed.kill()
    killed.wait()
    assert (out / LOCK_NAME).read_text().strip() == str(killed.pid), "a kill leaves the lock file"
    assert cli.main(train_argv(data, out)) == 0
    err = capsys.readouterr().err
    assert f"took over the lock {LOCK_NAME} of process {killed.pid}, which ended without releasing it" in err
    assert not (out / LOCK_NAME).exists()


def raise_in_step(exception):
    def step(self, noisy, clean):
        raise exception
    return step


EXITS = {"success": (None, 0), "Ctrl-C": (KeyboardInterrupt(), 130), "an error": (ValueError("bad"), 1),
         "out of memory": (MemoryError(), 1), "divergence": (training.TrainingDiverged("nan"), 1)}


@pytest.mark.parametrize("way", list(EXITS))
def test_a_run_holds_its_folder_for_its_whole_life_and_releases_it_on_every_exit(tmp_path, data, capsys,
                                                                                  monkeypatch, way):
    out = tmp_path / "run"
    real_step, seen = training._Run.step, []

    def step(self, noisy, clean):
        if not seen:  # while the run trains, its folder is held: another holder is refused
            seen.append((out / LOCK_NAME).read_text().strip())
            with pytest.raises(FolderInUse):
                FolderLock(str(out)).acquire()
        if EXITS[way][0] is not None:
            raise EXITS[way][0]
        return real_step(self, noisy, clean)

    monkeypatch.setattr(training._Run, "step", step)
    assert cli.main(train_argv(data, out)) == EXITS[way][1]
    assert seen == [str(os.getpid())]
    assert not (out / LOCK_NAME).exists() and "took over" not in capsys.readouterr().err
    monkeypatch.setattr(training._Run, "step", real_step)
    if (out / "checkpoint.npz").exists():  # a resumed run holds the folder too
        monkeypatch.setattr(training._Run, "step", step)
        seen.clear()
        resumed = cli.main(["train", "--resume", str(out / "checkpoint.npz"), "--epochs", "2", "--no-progress"])
        assert resumed == EXITS[way][1] and seen == [str(os.getpid())] and not (out / LOCK_NAME).exists()


def test_temporaries_of_another_live_process_are_never_removed(tmp_path, data, holder):
    out = tmp_path / "run"
    out.mkdir()
    live, dead = holder().pid, dead_pid()
    theirs = [f".checkpoint-{live}-abcd1234.npz", f".eval-{live}-x_y_z_12.json"]  # an eval writing beside a run
    killed = [f".checkpoint-{dead}-abcd1234.npz", f".metrics-{dead}-qwertyui.json"]
    mine = [".metrics-notes.json", ".checkpoint-1-short.npz"]  # not minidae's temporaries: left alone
    for name in theirs + killed + mine:
        (out / name).write_bytes(b"half")
    assert cli.main(train_argv(data, out)) == 0
    assert sorted(name for name in os.listdir(out) if name.startswith(".")) == sorted(theirs + mine)


def test_without_flock_the_lock_file_is_created_exclusively(tmp_path, monkeypatch, capsys, holder):
    """Where there is no flock (not POSIX, or a file system without it): O_EXCL, and a dead holder's file taken
    over by its process id."""
    from minidae import files
    monkeypatch.setattr(files, "fcntl", None)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(f"{holder().pid}\n")  # a running process's
    with pytest.raises(FolderInUse, match=r"another run is writing there \(process \d+ holds"):
        FolderLock(str(folder)).acquire()
    gone = dead_pid()
    (folder / LOCK_NAME).write_text(f"{gone}\n")
    lock = FolderLock(str(folder)).acquire()
    assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert f"took over the lock {LOCK_NAME} of process {gone}" in capsys.readouterr().err
    with pytest.raises(FolderInUse):
        FolderLock(str(folder)).acquire()  # held by this process: a second holder is refused
    lock.release()
    assert not (folder / LOCK_NAME).exists()
