"""Checkpoints as plain ``.npz`` files (loadable with ``numpy.load(path, allow_pickle=False)``).

Keys: ``model.<param>`` (weights), ``optim.<buffer>`` (optimiser state), ``epoch`` and
``iteration`` (where training stopped: completed epochs, iterations into the next; with the
seed in ``config`` they are the whole random state, since every epoch's shuffling and noise come
from a generator seeded by (seed, epoch)),
``train_losses`` / ``test_losses`` (history), ``config`` (the run's settings as JSON text).
Writes go to a temporary file that is renamed over the old checkpoint, so an interrupted
write never leaves a broken checkpoint behind.
"""
import json
import os
import tempfile

import numpy

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path, model, optimizer, epoch, iteration, train_losses, test_losses, config):
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update(epoch=numpy.array(epoch), iteration=numpy.array(iteration),
                  train_losses=numpy.asarray(train_losses, dtype=numpy.float64),
                  test_losses=numpy.asarray(test_losses, dtype=numpy.float64),
                  config=numpy.array(json.dumps(config, sort_keys=True)))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as f:
            numpy.savez(f, **arrays)
        os.chmod(temporary, 0o644)  # mkstemp's files are private; a checkpoint is an ordinary file
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def load_checkpoint(path):
    """-> dict with "model" and "optim" state dicts, "epoch", "iteration", the loss histories and "config"."""
    try:
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable minidae checkpoint ({exc})") from exc
    missing = {"epoch", "iteration", "config", "train_losses", "test_losses"} - arrays.keys()
    if missing:
        raise ValueError(f"{path}: not a minidae checkpoint (missing {', '.join(sorted(missing))})")
    return {"model": {k[6:]: v for k, v in arrays.items() if k.startswith("model.")},
            "optim": {k[6:]: v for k, v in arrays.items() if k.startswith("optim.")},
            "epoch": int(arrays["epoch"]), "iteration": int(arrays["iteration"]),
            "train_losses": arrays["train_losses"].tolist(), "test_losses": arrays["test_losses"].tolist(),
            "config": json.loads(str(arrays["config"]))}
