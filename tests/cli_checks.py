"""What the command-line tests share: one error line, and a disk that is full."""
import errno
import os


def one_line(capsys):
    """What the command wrote to stderr, checked to be exactly one line."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def full_disk(*args, **kwargs):
    """Stands in for a write: raises as a full disk does."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
