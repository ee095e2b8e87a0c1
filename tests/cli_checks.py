"""What the command-line tests share: one error line, a disk that is full, and images of one's own."""
import errno
import os

import numpy as np


def one_line(capsys):
    """What the command wrote to stderr, checked to be exactly one line."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def full_disk(*args, **kwargs):
    """Stands in for a write: raises as a full disk does."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def own_images(path, labels=True):
    """40 random 28 x 28 uint8 images of one's own (with labels 0, 1, 0, 1, ... unless ``labels`` is False) written
    to the .npz file ``path``; returns ``path``."""
    images = (np.random.default_rng(0).random((40, 28, 28)) * 255).astype(np.uint8)
    np.savez(path, images=images, **({"labels": np.arange(40) % 2} if labels else {}))
    return path
