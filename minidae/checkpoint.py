"""Checkpoints as plain ``.npz`` files (loadable with ``numpy.load(path, allow_pickle=False)``).

Keys: ``model.<key>`` (the model's state dict: weights, and buffers such as BatchNorm2d's running
statistics and its int64 ``num_batches_tracked``), ``optim.state.<index>.<entry>`` and ``optim.param_groups``
(the optimiser's state dict, flattened by ``minidae.optim.flat_state_dict``; the older flat keys
``optim.step``, ``optim.exp_avg.<index>`` still load), ``epoch`` and
``iteration`` (where training stopped: completed epochs, iterations into the next; with the
seed in ``config`` they fix every epoch's shuffling and noise, which come from a generator seeded
by (seed, epoch)),
``train_losses`` / ``test_losses`` (history), ``config`` (the run's settings as JSON text), and
``rng_state`` (the NumPy backend generator's state as JSON text, which only run-time draws such as
Dropout's masks use; absent for CuPy runs).
Writes go to a temporary file that is renamed over the old checkpoint, so an interrupted
write never leaves a broken checkpoint behind.
"""
import json
import os
import tempfile
import zipfile

import numpy

from .optim import flat_state_dict, nested_state_dict

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "CheckpointError"]


def save_checkpoint(path, model, optimizer, epoch, iteration, train_losses, test_losses, config, rng_state=None):
    """Write the model's and the optimiser's state dicts, the position, the history and (if given) the state
    of the backend's generator (``backend.rng_state()``) to ``path`` atomically."""
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in flat_state_dict(optimizer.state_dict()).items()})
    arrays.update(epoch=numpy.array(epoch), iteration=numpy.array(iteration),
                  train_losses=numpy.asarray(train_losses, dtype=numpy.float64),
                  test_losses=numpy.asarray(test_losses, dtype=numpy.float64),
                  config=numpy.array(json.dumps(config, sort_keys=True)))
    if rng_state is not None:
        arrays["rng_state"] = numpy.array(json.dumps(rng_state))
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


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, damaged, foreign or incomplete (the message names the file)."""


# What a checkpoint's config must hold for eval, denoise and --resume to rebuild its run.
REQUIRED_CONFIG = ("dataset", "seed", "noise", "noise_level", "batch_size", "lr", "weight_decay")


def load_checkpoint(path):
    """-> dict with "model" and "optim" state dicts, "epoch", "iteration", the loss histories, "config" and
    "rng_state" (None when the checkpoint has none).

    Raises CheckpointError, naming the file and the problem, for anything that is not an intact
    minidae checkpoint: a truncated or corrupted file, an empty one, missing entries, a config that
    is not JSON or lacks what a run needs, or weights that are not finite (integer buffers, such as
    BatchNorm2d's counter, pass; any other non-float entry is refused).
    """
    try:
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = "empty file" if isinstance(exc, EOFError) else f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"{path}: not a readable minidae checkpoint (damaged or not an .npz file: "
                              f"{reason})") from None
    if not isinstance(arrays, dict) or not hasattr(arrays, "keys"):
        raise CheckpointError(f"{path}: not a minidae checkpoint (a single array, not an .npz archive)")
    missing = {"epoch", "iteration", "config", "train_losses", "test_losses"} - arrays.keys()
    if missing:
        raise CheckpointError(f"{path}: not a minidae checkpoint (missing {', '.join(sorted(missing))})")
    try:
        config = json.loads(str(arrays["config"]))
    except ValueError as exc:
        raise CheckpointError(f"{path}: its config is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or any(key not in config for key in REQUIRED_CONFIG):
        absent = [key for key in REQUIRED_CONFIG if not isinstance(config, dict) or key not in config]
        raise CheckpointError(f"{path}: its config lacks {', '.join(absent)}, which eval, denoise and --resume need")
    model = {k[6:]: v for k, v in arrays.items() if k.startswith("model.")}
    if not model:
        raise CheckpointError(f"{path}: it holds no model weights")
    for key, value in model.items():
        if value.dtype.kind in "iu":
            continue  # an integer buffer (a counter such as num_batches_tracked) is finite by nature
        if value.dtype.kind != "f" or not numpy.isfinite(value).all():
            raise CheckpointError(f"{path}: the weights are not finite numbers ({key} holds "
                                  f"{'nan or inf' if value.dtype.kind == 'f' else value.dtype})")
    return {"model": model, "optim": nested_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim.")}),
            "epoch": int(arrays["epoch"]), "iteration": int(arrays["iteration"]),
            "train_losses": arrays["train_losses"].tolist(), "test_losses": arrays["test_losses"].tolist(),
            "config": config, "rng_state": _rng_state(arrays, path)}


def _rng_state(arrays, path):
    """The generator state the checkpoint holds (JSON text), or None; CheckpointError if it is not one."""
    if "rng_state" not in arrays:
        return None
    try:
        state = json.loads(str(arrays["rng_state"]))
    except ValueError as exc:
        raise CheckpointError(f"{path}: its rng_state is not valid JSON ({exc})") from None
    if not isinstance(state, dict) or not isinstance(state.get("bit_generator"), str):
        raise CheckpointError(f"{path}: its rng_state is not a NumPy generator state")
    return state


def load_weights(model, state, path):
    """``model.load_state_dict(state)``, with a CheckpointError naming ``path`` where they do not fit."""
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise CheckpointError(f"{path}: its weights do not fit the model ({message})") from None
    return model
