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
Dropout's masks use; absent for CuPy runs), ``diagnostics`` (the per-layer records so far, JSON text) and
``epoch_seconds`` (each epoch's training time, NaN where unknown; where ``iteration`` > 0, the last entry is the
time spent so far in the epoch under way).
Writes go to a temporary file that is renamed over the old checkpoint (minidae.files.atomic_path), so an
interrupted or failed write never leaves a broken checkpoint behind; weights or optimiser state that are
not finite are never written.

Loading reads only the members named above, checks each one's declared shape and size before
allocating it, and refuses a file whose arrays declare far more than it holds (a decompression bomb).
"""
import json
import math
import os
import zipfile
import zlib

import numpy

from .files import SpecialFile, atomic_path, open_regular
from .optim import flat_state_dict, nested_state_dict

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "check_optimizer_state", "is_checkpoint",
           "CheckpointError", "NonFiniteState"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, damaged, foreign or incomplete (the message names the file)."""


class NonFiniteState(ValueError):
    """save_checkpoint refused weights or optimiser state holding NaN or infinity (nothing was written);
    ``key`` names the first such entry."""

    def __init__(self, message, key):
        super().__init__(message)
        self.key = key


def _nonfinite_key(arrays, dtype=None):
    """The first key of ``arrays`` whose floating-point values are not all finite (after a cast to ``dtype``,
    where given), else None. Integer and other arrays pass."""
    for key, value in arrays.items():
        value = numpy.asarray(value)
        if value.dtype.kind != "f":
            continue
        if dtype is not None:
            with numpy.errstate(over="ignore"):
                value = value.astype(dtype)
        if not numpy.isfinite(value).all():
            return key
    return None


def save_checkpoint(path, model, optimizer, epoch, iteration, train_losses, test_losses, config, rng_state=None,
                    diagnostics=None, epoch_seconds=None):
    """Write the model's and the optimiser's state dicts, the position, the history and (if given) the state
    of the backend's generator (``backend.rng_state()``) to ``path`` atomically.

    Raises NonFiniteState, writing nothing, where a weight or an optimiser buffer holds NaN or infinity."""
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in flat_state_dict(optimizer.state_dict()).items()})
    bad = _nonfinite_key({k: v for k, v in arrays.items() if k.startswith(("model.", "optim."))})
    if bad is not None:
        raise NonFiniteState(f"{path}: not written: {bad} holds nan or inf", bad)
    arrays.update(epoch=numpy.array(epoch), iteration=numpy.array(iteration),
                  train_losses=numpy.asarray(train_losses, dtype=numpy.float64),
                  test_losses=numpy.asarray(test_losses, dtype=numpy.float64),
                  config=numpy.array(json.dumps(config, sort_keys=True)))
    if rng_state is not None:
        arrays["rng_state"] = numpy.array(json.dumps(rng_state))
    if diagnostics is not None:  # the per-layer records so far (minidae.diagnostics), as JSON text
        arrays["diagnostics"] = numpy.array(json.dumps(diagnostics, allow_nan=False))
    if epoch_seconds is not None:  # each epoch's training time so far (NaN: not known), the last partial if iteration
        arrays["epoch_seconds"] = numpy.asarray(epoch_seconds, dtype=numpy.float64)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            numpy.savez(f, **arrays)


# What a checkpoint's config must hold for eval, denoise and --resume to rebuild its run.
REQUIRED_CONFIG = ("dataset", "seed", "noise", "noise_level", "batch_size", "lr", "weight_decay")
_WHOLE, _NUMBER, _TEXT, _FLAG = ((int,), "a whole number"), ((int, float), "a number"), ((str,), "text"), \
    ((bool,), "true or false")
# The type of each setting a checkpoint's config may hold (others are not read).
CONFIG_TYPES = {"dataset": _TEXT, "seed": _WHOLE, "noise": _TEXT, "noise_level": _NUMBER, "batch_size": _WHOLE,
                "lr": _NUMBER, "weight_decay": _NUMBER, "epochs": _WHOLE, "model": _TEXT, "optimizer": _TEXT,
                "momentum": _NUMBER, "loss": _TEXT, "clip": _FLAG, "preset": _TEXT, "backend": _TEXT,
                "train_samples": ((int, type(None)), "a whole number or null"),
                "test_samples": ((int, type(None)), "a whole number or null"),
                "data": ((str, type(None)), "a path or null"), "test_data": ((str, type(None)), "a path or null"),
                "test_fraction": ((int, float, type(None)), "a number or null"), "image_size": _WHOLE,
                "model_sha256": ((str, type(None)), "a SHA-256 as text or null")}
FIXED_MEMBERS = ("epoch", "iteration", "config", "train_losses", "test_losses", "rng_state", "diagnostics",
                 "epoch_seconds")
# Arrays may declare at most this much more than the file's size on disk (numpy.savez stores them
# uncompressed, so a checkpoint minidae wrote declares exactly what it holds).
SLACK_BYTES = 16 << 20


def _size(count):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            break
        count /= 1024
    return f"{count} B" if unit == "B" else f"{count:.1f} {unit}"


def _known(name):
    key = name[:-4]
    return name.endswith(".npy") and (key in FIXED_MEMBERS or key.startswith(("model.", "optim.")))


def _read_member(archive, info, path):
    """One member as an array, its header's shape and dtype checked against the member's size first."""
    key = info.filename[:-4]
    with archive.open(info) as f:
        version = numpy.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise CheckpointError(f"{path}: {key} is in .npy format version {version}, which minidae does not read")
        read_header = numpy.lib.format.read_array_header_1_0 if version == (1, 0) else \
            numpy.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if dtype.hasobject:
            raise CheckpointError(f"{path}: {key} holds Python objects, which a checkpoint never does (minidae loads "
                                  f"plain arrays only)")
        declared = math.prod(shape) * dtype.itemsize
        if f.tell() + declared != info.file_size:
            raise CheckpointError(f"{path}: {key} declares shape {shape} of {dtype} ({_size(declared)}), but the "
                                  f"archive holds {_size(max(info.file_size - f.tell(), 0))} for it (damaged or forged)")
        f.seek(0)
        return numpy.lib.format.read_array(f, allow_pickle=False)


def _read_arrays(path):
    """{key: array} of the members a checkpoint may hold (others are never read)."""
    try:
        f = open_regular(path)  # a named pipe or a device is refused before anything waits on it
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except SpecialFile as exc:
        raise CheckpointError(f"{path}: not a minidae checkpoint ({exc.kind}, not a regular file)") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with f:
        return _read_archive(f, path)


def _read_archive(f, path):
    size = os.fstat(f.fileno()).st_size
    magic = f.read(6)
    f.seek(0)
    if size == 0:
        raise CheckpointError(f"{path}: not a readable minidae checkpoint (damaged or not an .npz file: empty file)")
    if magic == b"\x93NUMPY":
        raise CheckpointError(f"{path}: not a minidae checkpoint (a single array, .npy, not an .npz archive)")
    try:
        with zipfile.ZipFile(f) as archive:
            members = [archive.getinfo(name) for name in dict.fromkeys(archive.namelist()) if _known(name)]
            declared, budget = sum(info.file_size for info in members), 4 * size + SLACK_BYTES
            if declared > budget:
                raise CheckpointError(f"{path}: its arrays declare {_size(declared)} in a {_size(size)} file, more "
                                      f"than the {_size(budget)} a checkpoint of that size may unpack to (damaged, "
                                      f"or a decompression bomb); not loaded")
            return {info.filename[:-4]: _read_member(archive, info, path) for info in members}
    except CheckpointError:
        raise
    # NotImplementedError is zipfile's answer to a member compressed by a method it does not know
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: not a readable minidae checkpoint (damaged or not an .npz file: "
                              f"{type(exc).__name__}: {exc})") from None


def _whole_number(arrays, key, path):
    value = arrays[key]
    if value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
        raise CheckpointError(f"{path}: its {key} is not a non-negative whole number (found shape {value.shape} "
                              f"of {value.dtype})")
    return int(value)


def _history(arrays, key, path):
    value = arrays[key]
    if value.ndim != 1 or value.dtype.kind not in "fiu":
        raise CheckpointError(f"{path}: its {key} is not a list of numbers (found shape {value.shape} of {value.dtype})")
    return value.astype(numpy.float64).tolist()


def _text(arrays, key, path):
    value = arrays[key]
    if value.shape != () or value.dtype.kind != "U":
        raise CheckpointError(f"{path}: its {key} is not JSON text (found shape {value.shape} of {value.dtype})")
    try:
        return json.loads(str(value))
    except ValueError as exc:
        raise CheckpointError(f"{path}: its {key} is not valid JSON ({exc})") from None


def _check_config(config, path):
    if not isinstance(config, dict) or any(key not in config for key in REQUIRED_CONFIG):
        absent = [key for key in REQUIRED_CONFIG if not isinstance(config, dict) or key not in config]
        raise CheckpointError(f"{path}: its config lacks {', '.join(absent)}, which eval, denoise and --resume need")
    for key, (types, description) in CONFIG_TYPES.items():
        value = config.get(key)
        if key in config and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            raise CheckpointError(f"{path}: its config has {key} = {json.dumps(value)}, which is not {description}; "
                                  f"correct the entry or use another checkpoint")
    if config["seed"] < 0:  # NumPy's generators take none: "expected non-negative integer", naming nothing
        raise CheckpointError(f"{path}: its config has seed = {config['seed']}, which is not a whole number >= 0; "
                              f"correct the entry or use another checkpoint")


def check_optimizer_state(state, path, dtype=None):
    """Raise CheckpointError naming ``path`` where an optimiser buffer of ``state`` (the flat dict of arrays a
    checkpoint stores under ``optim.``) holds NaN or infinity, in its own dtype or, where given, in ``dtype``."""
    bad = _nonfinite_key(state, dtype)
    if bad is not None:
        raise CheckpointError(f"{path}: its optimiser state is not finite ({bad} holds nan or inf"
                              + (f" as {numpy.dtype(dtype).name}" if dtype is not None else "") + ")")


def load_checkpoint(path):
    """-> dict with "model" and "optim" state dicts, "epoch", "iteration", the loss histories, "config" and
    "rng_state" (None when the checkpoint has none).

    Raises CheckpointError, naming the file and the problem, for anything that is not an intact
    minidae checkpoint: a truncated or corrupted file, an empty one, a lone .npy, missing entries, entries of
    the wrong kind (an epoch that is not one whole number, Python objects), a config that is not JSON, lacks
    what a run needs or holds values of the wrong type, arrays that declare more than the file can hold, or
    weights or optimiser state that are not finite (integer buffers, such as BatchNorm2d's counter, pass; any
    other non-float weight is refused).
    """
    arrays = _read_arrays(path)
    missing = {"epoch", "iteration", "config", "train_losses", "test_losses"} - arrays.keys()
    if missing:
        raise CheckpointError(f"{path}: not a minidae checkpoint (missing {', '.join(sorted(missing))})")
    config = _text(arrays, "config", path)
    _check_config(config, path)
    model = {k[6:]: v for k, v in arrays.items() if k.startswith("model.")}
    if not model:
        raise CheckpointError(f"{path}: it holds no model weights")
    for key, value in model.items():
        if value.dtype.kind in "iu":
            continue  # an integer buffer (a counter such as num_batches_tracked) is finite by nature
        if value.dtype.kind != "f" or not numpy.isfinite(value).all():
            raise CheckpointError(f"{path}: the weights are not finite numbers ({key} holds "
                                  f"{'nan or inf' if value.dtype.kind == 'f' else value.dtype})")
    optim = {k[6:]: v for k, v in arrays.items() if k.startswith("optim.")}
    check_optimizer_state(optim, path)
    return {"model": model, "optim": nested_state_dict(optim),
            "epoch": _whole_number(arrays, "epoch", path), "iteration": _whole_number(arrays, "iteration", path),
            "train_losses": _history(arrays, "train_losses", path), "test_losses": _history(arrays, "test_losses", path),
            "config": config, "rng_state": _rng_state(arrays, path),
            "diagnostics": _text(arrays, "diagnostics", path) if "diagnostics" in arrays else None,
            "epoch_seconds": _history(arrays, "epoch_seconds", path) if "epoch_seconds" in arrays else None}


def _rng_state(arrays, path):
    """The generator state the checkpoint holds (JSON text), or None; CheckpointError if it is not one."""
    if "rng_state" not in arrays:
        return None
    state = _text(arrays, "rng_state", path)
    if not isinstance(state, dict) or not isinstance(state.get("bit_generator"), str):
        raise CheckpointError(f"{path}: its rng_state is not a NumPy generator state")
    return state


def is_checkpoint(path):
    """Whether ``path`` is an existing file that looks like a minidae checkpoint (an .npz with its config)."""
    try:
        with open_regular(path) as f, zipfile.ZipFile(f) as archive:
            return {"config.npy", "epoch.npy"} <= set(archive.namelist())
    except (OSError, ValueError, zipfile.BadZipFile):  # SpecialFile (a named pipe, say) is a ValueError
        return False


def load_weights(model, state, path):
    """``model.load_state_dict(state)``, with a CheckpointError naming ``path`` where they do not fit, or where
    a value is not finite in the model's own dtype (float64 weights of 1e300 become inf in float32)."""
    own = model.state_dict()
    bad = next((key for key in state if key in own and _nonfinite_key({key: state[key]}, own[key].dtype)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: the weights are not finite numbers as {own[bad].dtype} ({bad} holds values "
                              f"beyond its range, which become inf)")
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise CheckpointError(f"{path}: its weights do not fit the model ({message})") from None
    return model
