"""Datasets and mini-batches for a loop of your own, as torch.utils.data's TensorDataset and DataLoader (and the
code the trainer uses).

    dataset = ArrayDataset(features, targets)           # any arrays with one first axis, any dtype and shape
    loader = DataLoader(dataset, batch_size=64, shuffle=True, drop_last=False, seed=0)
    for x, y in loader:                                 # a tuple per batch: features[i], targets[i] for i in it
        ...

``ArrayDataset(*arrays)`` is PyTorch's ``TensorDataset``: ``dataset[i]`` is the tuple ``(a[i], b[i], ...)``, and a
batch is the tuple of the arrays at the batch's indices, each keeping its dtype and the shape after its first
axis. Nothing is rescaled or normalised: that is the user's business (``(x - mean) / std`` before or inside the
loop). ``DataLoader`` also takes a dataset of one's own (anything with ``__len__`` and ``__getitem__``, as
PyTorch's map-style datasets); its items are put together by ``collate`` (a function of the list of items), by
default stacked as PyTorch's ``default_collate`` stacks them (arrays and numbers into arrays, tuples, lists and
dicts item by item).

Every pass over ``loader`` is the next epoch; epoch e is shuffled by a generator seeded by (seed, e), so the same
seed gives the same batches on a backend, and ``loader.epoch(e)`` replays any one of them. An ArrayDataset's
arrays go to the active backend once (a GPU copies nothing per batch).

The image tools are apart: ``ArrayDataset.from_path(path)`` reads pictures (``minidae.data.images``) and gives
them as float32 (N, C, H, W) in [0, 1]; :class:`NoisyBatches` yields (noisy, clean) image batches for denoising,
as the trainer uses them; ``minidae.data.noise.apply_noise("gaussian", x, 0.5)`` corrupts any batch.
"""
import math

import numpy

from .. import backend
from .images import check_images, load_images, unit_images
from .noise import apply_noise, check_noise

__all__ = ["ArrayDataset", "DataLoader", "NoisyBatches", "default_collate", "unit_images", "epoch_seed"]


def epoch_seed(seed, epoch):
    """An int seed for epoch ``epoch`` of a run seeded with ``seed`` (independent streams)."""
    return int(numpy.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _is_array(value):
    """A NumPy array, or an array of the active backend (a CuPy array on the GPU)."""
    return isinstance(value, (numpy.ndarray, backend.xp.ndarray))


def _checked_array(value, position):
    """``value`` as an array with a first axis (NumPy, or the backend's), or ValueError in one line: a torch
    tensor (convert it), a ragged list, Python objects, a scalar."""
    what = f"ArrayDataset: array {position}"
    if type(value).__module__.split(".")[0] == "torch":
        raise ValueError(f"{what} is a torch.Tensor; minidae takes NumPy arrays: pass tensor.numpy() "
                         f"(tensor.detach().cpu().numpy() for one on a GPU or with a gradient)")
    if not _is_array(value):
        try:
            value = numpy.asarray(value)
        except ValueError as exc:  # NumPy 2: "setting an array element with a sequence ... inhomogeneous shape"
            raise ValueError(f"{what} is ragged: its items have different shapes ({exc}); pad or crop them to one "
                             f"shape, or give a dataset of one's own to DataLoader with a collate of one's own") \
                from None
    if value.dtype == object:
        raise ValueError(f"{what} holds Python objects (dtype object, shape {value.shape}): a ragged list, or items "
                         f"that are not numbers; give arrays of one shape and a numeric dtype, or a dataset of one's "
                         f"own with a collate of one's own")
    if value.ndim == 0:
        raise ValueError(f"{what} is a scalar ({value!r}); every array needs a first axis, one entry per example")
    return value


class ArrayDataset:
    """Any arrays with one first axis, as torch.utils.data.TensorDataset: ``len(dataset)`` is that axis's length
    and ``dataset[i]`` the tuple ``(arrays[0][i], arrays[1][i], ...)``. Any dtype and shape; nothing is rescaled.

    ``arrays`` holds them as given (NumPy arrays; lists are converted). ``source`` says where they came from
    (one line) and ``classes`` names the classes of integer labels, where known (``from_path`` sets both)."""

    def __init__(self, *arrays, source=None, classes=None):
        if not arrays:
            raise ValueError("ArrayDataset: give at least one array, e.g. ArrayDataset(features, targets)")
        arrays = tuple(_checked_array(a, k) for k, a in enumerate(arrays))
        lengths = [len(a) for a in arrays]
        if len(set(lengths)) > 1:
            raise ValueError(f"ArrayDataset: the arrays' first axes differ ({', '.join(map(str, lengths))}); each "
                             f"array needs one entry per example along its first axis (PyTorch: size mismatch "
                             f"between tensors)")
        self.arrays, self.classes = arrays, classes
        self.source = source or f"{len(arrays)} array{'s' * (len(arrays) > 1)} of {lengths[0]} examples"

    @classmethod
    def from_path(cls, path, image_size=28, channels=1):
        """The pictures (and labels) at ``path``: a folder of pictures, a picture, a .npy/.npz or an IDX file
        (minidae.data.images.load_images states the rules), as float32 images (N, C, S, S) in [0, 1], and int64
        labels where the source has them: ``ArrayDataset(images, labels)``, else ``ArrayDataset(images)``. The
        class names (a folder's sub-folders) are in ``classes``."""
        found = load_images(path, image_size, channels=channels)
        images = backend.to_numpy(unit_images(found.images))
        arrays = (images,) if found.labels is None else (images, found.labels)
        return cls(*arrays, source=found.source, classes=found.classes)

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)


def default_collate(items):
    """A list of dataset items as one batch, as PyTorch's default_collate puts them together: arrays (of one
    shape) and numbers stacked into an array on the active backend (Python ints as int64, floats as float64),
    tuples and lists item by item (a tuple stays a tuple), dicts key by key, strings and None kept as a list.
    TypeError or ValueError, in one line, for what cannot be stacked (give a ``collate`` of one's own)."""
    xp, first = backend.xp, items[0]
    if _is_array(first) or isinstance(first, numpy.generic):
        shapes = {tuple(getattr(item, "shape", ())) for item in items}
        if len(shapes) > 1:
            raise ValueError(f"DataLoader: the items of a batch have different shapes ({', '.join(map(str, sorted(shapes)))}); "
                             f"the default collate stacks arrays of one shape: give collate=your_function for "
                             f"items of other shapes")
        return xp.stack([xp.asarray(item) for item in items])
    if isinstance(first, bool):
        return xp.asarray(items, dtype=bool)
    if isinstance(first, int):
        return xp.asarray(items, dtype=numpy.int64)
    if isinstance(first, float):
        return xp.asarray(items, dtype=numpy.float64)
    if isinstance(first, str) or first is None:
        return list(items)
    if isinstance(first, dict):
        return {key: default_collate([item[key] for item in items]) for key in first}
    if isinstance(first, (tuple, list)):
        if any(len(item) != len(first) for item in items):
            raise ValueError("DataLoader: the items of a batch are sequences of different lengths; the default "
                             "collate needs one length: give collate=your_function")
        parts = [default_collate(list(part)) for part in zip(*items)]
        return tuple(parts) if isinstance(first, tuple) else parts
    if type(first).__module__.split(".")[0] == "torch":
        raise TypeError("DataLoader: the dataset gives torch tensors; minidae takes NumPy arrays: return "
                        "tensor.numpy() from __getitem__")
    raise TypeError(f"DataLoader: the default collate cannot batch {type(first).__name__} items; give "
                    f"collate=your_function (it gets the list of items and returns the batch)")


class DataLoader:
    """Mini-batches of a dataset, as torch.utils.data.DataLoader: ``for batch in loader``.

    ``dataset``: an :class:`ArrayDataset` (each batch the tuple of its arrays at the batch's indices, on the
    active backend), a single array (each batch an array), or any object with ``__len__`` and ``__getitem__``
    (each batch ``collate(list of its items)``). ``batch_size`` items per batch, the last one smaller unless
    ``drop_last``; ``shuffle`` draws each epoch's order from a generator seeded by (``seed``, epoch);
    ``collate`` (PyTorch's ``collate_fn``, which is accepted too) puts a list of items together, by default
    :func:`default_collate`."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=0, collate=None, collate_fn=None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if collate is not None and collate_fn is not None:
            raise ValueError("DataLoader: give collate or collate_fn (PyTorch's name for it), not both")
        if isinstance(dataset, tuple):
            dataset = ArrayDataset(*dataset)
        elif _is_array(dataset) or type(dataset).__module__.split(".")[0] == "torch":
            dataset = _checked_array(dataset, 0)
        elif not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader: a dataset needs __len__ and __getitem__ (a map-style dataset, as PyTorch's), "
                            f"got {type(dataset).__name__}; for arrays, give ArrayDataset(*arrays)")
        self.dataset, self.batch_size, self.shuffle, self.drop_last, self.seed = dataset, batch_size, shuffle, \
            drop_last, seed
        self.collate = collate or collate_fn
        self._arrays = None  # an ArrayDataset's arrays (or the one array) on the device, copied there once
        if self.collate is None and isinstance(dataset, ArrayDataset):
            self._arrays = tuple(backend.xp.asarray(a) for a in dataset.arrays)
        elif self.collate is None and _is_array(dataset):
            self._arrays = backend.xp.asarray(dataset)
        self._next_epoch = 0

    def __len__(self):
        count = len(self.dataset) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def __iter__(self):
        self._next_epoch += 1
        return self.epoch(self._next_epoch - 1)

    def epoch(self, epoch):
        """The batches of epoch ``epoch``, in the order its own generator shuffles them."""
        for index, _ in self._indices(epoch):
            yield self._batch(index)

    def _indices(self, epoch):
        """(the indices of each batch on the backend, the epoch's generator): the generator that shuffled, for
        drawing the batch's noise next (NoisyBatches)."""
        xp = backend.xp
        rng = xp.random.default_rng(epoch_seed(self.seed, epoch))
        n = len(self.dataset)
        order = xp.argsort(rng.random(n)) if self.shuffle else xp.arange(n)
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size], rng

    def _batch(self, index):
        if isinstance(self._arrays, tuple):
            return tuple(a[index] for a in self._arrays)
        if self._arrays is not None:
            return self._arrays[index]
        items = [self.dataset[int(i)] for i in backend.to_numpy(index)]
        return (self.collate or default_collate)(items)


class NoisyBatches(DataLoader):
    """(noisy, clean) image batches for denoising: ``for noisy, clean in batches.epoch(e)`` (or ``for ... in
    batches``), each float32 (B, C, H, W) in [0, 1] (:func:`~minidae.data.images.unit_images` of the images,
    which are (N, H, W) or (N, C, H, W), uint8 or float in [0, 1]); the noise (a name from
    ``minidae.data.noise.NOISES`` and its level) is drawn from the epoch's generator right after its shuffle, so a
    seed fixes both. ``images`` may be an ArrayDataset whose first array holds them."""

    def __init__(self, images, batch_size=64, noise="gaussian", level=0.5, seed=0, shuffle=True,
                 drop_last=False, clip=True):
        check_noise(noise, level)
        images = images.arrays[0] if isinstance(images, ArrayDataset) else images
        check_images(images, "NoisyBatches")
        super().__init__(ArrayDataset(images), batch_size, shuffle, drop_last, seed)
        self.images = self._arrays[0]  # on the device
        self.noise, self.level, self.clip = noise, level, clip

    def epoch(self, epoch):
        """The (noisy, clean) batches of epoch ``epoch``, shuffled and corrupted by its own generator."""
        for index, rng in self._indices(epoch):
            clean = unit_images(self.images[index])
            yield apply_noise(self.noise, clean, self.level, rng=rng, clip=self.clip), clean
