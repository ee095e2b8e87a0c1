"""Writing a run's files so that a failure never leaves a half file or destroys the previous one, and one run
per folder.

Every file (checkpoint, metrics, plots, exported weights) is written to a hidden temporary beside its
target, ``.<stem>-<process id>-<8 random letters><suffix>``, and renamed over the target only once complete: a
full disk, a kill or Ctrl-C leaves the previous file as it was. ``remove_temporaries`` clears those a killed
process left, never those of a process still running. ``FolderLock`` holds a run's output folder
(``.minidae.lock``, holding the process id) for the run's whole life. ``open_regular`` opens a file for
reading only if it is a regular one: a named pipe, a socket or a device is refused before anything waits on it.
"""
import contextlib
import errno
import json
import math
import os
import re
import stat
import sys
import tempfile

try:
    import fcntl
except ImportError:  # not a POSIX system: the lock falls back on creating its file exclusively
    fcntl = None

__all__ = ["atomic_path", "write_json", "json_safe", "remove_temporaries", "FolderLock", "FolderInUse", "LOCK_NAME",
           "open_regular", "SpecialFile", "file_kind"]

LOCK_NAME = ".minidae.lock"


class SpecialFile(ValueError):
    """A path that is not a regular file (a named pipe, a socket, a device or a folder): ``kind`` says which."""

    def __init__(self, path, kind):
        super().__init__(f"{path}: {kind}, not a regular file; minidae reads only regular files")
        self.path, self.kind = path, kind


def file_kind(mode):
    """What a file of ``mode`` (``os.stat(...).st_mode``) is, in words: "a regular file", "a named pipe", ..."""
    for test, kind in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a special file"


def open_regular(path):
    """``open(path, "rb")``, for a regular file only (links followed): anything else raises SpecialFile before
    anything could wait on it. A named pipe is never opened for reading (which would wait for a writer for ever);
    the file is opened without blocking and checked again, so one swapped in meanwhile is refused too."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise SpecialFile(path, file_kind(mode))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                 | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SpecialFile(path, file_kind(mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (same suffix, so writers that go by it keep working); when the
    block ends without an exception it becomes ``path`` (mode 0644), otherwise it is removed.

    An OSError carries ``path`` as its filename, not the temporary's."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    stem, suffix = os.path.splitext(name)
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{stem}-{os.getpid()}-", suffix=suffix)
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


def _running(pid):
    """Whether process ``pid`` exists (this process included; on Windows, where signal 0 is no probe, always)."""
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists is checked
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_temporaries(directory, names):
    """Remove the temporaries ``atomic_path`` left in ``directory`` for the files ``names`` (after a kill): those
    whose process is no longer running; another live process's are its work in progress and stay."""
    try:
        present = os.listdir(directory)
    except OSError:
        return
    for name in names:
        stem, suffix = os.path.splitext(name)
        pattern = re.compile(rf"\.{re.escape(stem)}-(\d+)-[a-z0-9_]{{8}}{re.escape(suffix)}")
        for leftover in present:
            found = pattern.fullmatch(leftover)
            if found and not _running(int(found.group(1))):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, leftover))


class FolderInUse(ValueError):
    """Another process holds the folder (``pid``: its process id, None where the lock file does not say)."""

    def __init__(self, message, pid=None):
        super().__init__(message)
        self.pid = pid


class FolderLock:
    """The lock of one output folder: ``acquire()`` creates ``<folder>/.minidae.lock`` holding this process's id
    and locks it (``fcntl.flock``, which the system releases when the process ends, however it ends);
    ``release()`` removes it. A second process's ``acquire()`` raises FolderInUse naming the holder; a lock file
    whose process ended without releasing it (a kill) is taken over, with a line on stderr saying so."""

    def __init__(self, directory, flag="--out", name=LOCK_NAME):
        self.directory, self.flag = directory, flag
        self.path = os.path.join(directory, name)
        self._fd = None

    @staticmethod
    def _holder(fd):
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 64).decode("ascii", "replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _refuse(self, pid):
        who = f"process {pid}" if pid is not None else "another process"
        return FolderInUse(f"{self.flag} {self.directory}: another run is writing there ({who} holds {self.path}); "
                           f"wait for it to end, or choose another {self.flag}", pid)

    def acquire(self, wait=None):
        """Hold the folder (module docstring); returns self. With ``wait`` (a function, told the holder's process
        id), a held lock is waited for instead of refused, after calling ``wait`` once. Where the system or the
        file system has no ``flock``, the lock file is created exclusively instead, and one whose process is no
        longer running is taken over."""
        while self._fd is None:
            taken = self._flock(wait) if fcntl is not None else self._exclusive()
            if taken is None:
                continue  # raced with a holder releasing it: try again
            if taken == "unsupported":
                taken = self._exclusive()
                if taken is None:
                    continue
            fd, previous = taken
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            if previous is not None and previous != os.getpid():
                print(f"minidae: {self.directory}: took over the lock {os.path.basename(self.path)} of process "
                      f"{previous}, which ended without releasing it", file=sys.stderr)
            wait = None
        return self

    def _flock(self, wait):
        """(fd, the previous holder's id) locked with flock; None to try again; "unsupported" where the file
        system has no flock; FolderInUse where another process holds it (and ``wait`` is None)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    return "unsupported"
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                pid = self._holder(fd)
                if wait is None:
                    raise self._refuse(pid) from None
                wait(pid)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # the holder may have released it (removed the file) between our open and our flock
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if not current:
            os.close(fd)
            return None
        return fd, self._holder(fd)

    def _exclusive(self):
        """(fd, the previous holder's id) of a lock file created exclusively, taking over one whose process ended;
        None to try again; FolderInUse where a running process holds it."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), self._stale
        except FileExistsError:
            pass
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        pid = self._holder(fd)
        os.close(fd)
        if pid is None or _running(pid):
            raise self._refuse(pid)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        self._stale = pid
        return None

    _stale = None

    def release(self):
        """Give the folder up (remove the lock file); nothing if it is not held."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
