"""Writing a run's files so that a failure never leaves a half file or destroys the previous one.

Every file (checkpoint, metrics, plots, exported weights) is written to a hidden temporary beside its
target, ``.<stem>-<random letters><suffix>``, and renamed over the target only once complete: a full disk, a
kill or Ctrl-C leaves the previous file as it was. ``remove_temporaries`` clears those a kill left.
"""
import contextlib
import glob
import json
import math
import os
import tempfile

__all__ = ["atomic_path", "write_json", "json_safe", "remove_temporaries"]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (same suffix, so writers that go by it keep working); when the
    block ends without an exception it becomes ``path`` (mode 0644), otherwise it is removed.

    An OSError carries ``path`` as its filename, not the temporary's."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    stem, suffix = os.path.splitext(name)
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{stem}-", suffix=suffix)
        os.close(handle)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), path) from None
    try:
        yield temporary
        os.chmod(temporary, 0o644)  # mkstemp's files are private; these are ordinary files
        os.replace(temporary, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), path) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def json_safe(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path, value):
    """Write ``value`` as strict JSON (non-finite numbers as null), atomically."""
    with atomic_path(path) as temporary, open(temporary, "w") as f:
        json.dump(json_safe(value), f, indent=2, allow_nan=False)


def remove_temporaries(directory, names):
    """Remove the temporaries ``atomic_path`` left in ``directory`` for the files ``names`` (after a kill)."""
    for name in names:
        stem, suffix = os.path.splitext(name)
        for leftover in glob.glob(os.path.join(glob.escape(directory), f".{stem}-*{suffix}")):
            with contextlib.suppress(OSError):
                os.remove(leftover)
