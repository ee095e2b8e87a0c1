"""Datasets and mini-batches for a loop of your own, as torch.utils.data's pair (and the code the trainer uses).

    dataset = ArrayDataset(images, labels)              # or ArrayDataset.from_path("my_pictures/")
    loader = DataLoader(dataset, batch_size=64, shuffle=True, drop_last=False, seed=0)
    for x, y in loader:                                 # x float32 (B, 1, H, W) in [0, 1]; y the labels or None
        ...

Every pass over ``loader`` is the next epoch; epoch e is shuffled by a generator seeded by (seed, e), so the same
seed gives the same batches on a backend, and ``loader.epoch(e)`` replays any one of them. The data go to the
active backend once (a GPU copies nothing per batch). Noise for denoising, on any batch:
``minidae.data.noise.apply_noise("gaussian", x, 0.5)``, or :class:`NoisyBatches`, which yields (noisy, clean).
"""
import math

import numpy

from .. import backend
from .images import load_images
from .noise import apply_noise, check_noise

__all__ = ["ArrayDataset", "DataLoader", "NoisyBatches", "unit_images", "epoch_seed"]


def unit_images(images):
    """Images (N, H, W), uint8 0..255 or float in [0, 1] -> float32 (N, 1, H, W) in [0, 1] on the active backend."""
    xp = backend.xp
    images = xp.asarray(images)
    return ((images.astype(xp.float32) / 255) if images.dtype == numpy.uint8 else images.astype(xp.float32))[:, None]


def epoch_seed(seed, epoch):
    """An int seed for epoch ``epoch`` of a run seeded with ``seed`` (independent streams)."""
    return int(numpy.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class ArrayDataset:
    """Images (N, H, W) or (N, 1, H, W), uint8 0..255 or float in [0, 1], with labels (N,) or None:
    ``len(dataset)``, ``dataset[i]`` is (image, label)."""

    def __init__(self, images, labels=None, source=None):
        if getattr(images, "ndim", None) == 4 and images.shape[1] == 1:
            images = images[:, 0]
        if getattr(images, "ndim", None) != 3 or not (images.dtype == numpy.uint8 or images.dtype.kind == "f"):
            raise ValueError(f"ArrayDataset: expected images (N, H, W) or (N, 1, H, W), uint8 or float in [0, 1], got "
                             f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
        if images.dtype.kind == "f" and images.size and not (float(images.min()) >= 0 and float(images.max()) <= 1):
            raise ValueError(f"ArrayDataset: float images must lie in [0, 1], got [{float(images.min())}, "
                             f"{float(images.max())}]; divide 0..255 images by 255, or pass them as uint8")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"ArrayDataset: {len(labels)} labels for {len(images)} images")
        self.images, self.labels = images, labels
        self.source = source or f"an array of {len(images)} images"

    @classmethod
    def from_path(cls, path, image_size=28):
        """The images (and labels) at ``path``: a folder of pictures, a .npy/.npz or an IDX file
        (minidae.data.images.load_images states the rules)."""
        found = load_images(path, image_size)
        return cls(found.images, found.labels, found.source)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], None if self.labels is None else self.labels[index]


class DataLoader:
    """Mini-batches of an :class:`ArrayDataset` (or of anything with ``images`` and ``labels``): ``for x, y in
    loader`` gives x float32 (B, 1, H, W) in [0, 1] on the active backend and y the batch's labels (or None)."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=0):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(dataset, ArrayDataset):
            dataset = ArrayDataset(*dataset) if isinstance(dataset, tuple) else ArrayDataset(dataset)
        self.dataset, self.batch_size, self.shuffle, self.drop_last, self.seed = dataset, batch_size, shuffle, \
            drop_last, seed
        self.images = backend.xp.asarray(dataset.images)  # onto the device once
        self.labels = None if dataset.labels is None else backend.xp.asarray(dataset.labels)
        self._next_epoch = 0

    def __len__(self):
        count = len(self.images) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def __iter__(self):
        self._next_epoch += 1
        return self.epoch(self._next_epoch - 1)

    def epoch(self, epoch):
        """The (x, y) batches of epoch ``epoch``, in the order its own generator shuffles them."""
        for x, y, _ in self._batches(epoch):
            yield x, y

    def _batches(self, epoch):
        """(x, y, the epoch's generator): the generator that shuffled, for drawing the batch's noise next."""
        xp = backend.xp
        rng = xp.random.default_rng(epoch_seed(self.seed, epoch))
        n = len(self.images)
        order = xp.argsort(rng.random(n)) if self.shuffle else xp.arange(n)
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield unit_images(self.images[index]), None if self.labels is None else self.labels[index], rng


class NoisyBatches(DataLoader):
    """(noisy, clean) batches for denoising: ``for noisy, clean in batches.epoch(e)`` (or ``for ... in
    batches``), each float32 (B, 1, H, W); the noise (a name from ``minidae.data.noise.NOISES`` and its level)
    is drawn from the epoch's generator right after its shuffle, so a seed fixes both."""

    def __init__(self, images, batch_size=64, noise="gaussian", level=0.5, seed=0, shuffle=True,
                 drop_last=False, clip=True):
        check_noise(noise, level)
        dataset = images if isinstance(images, ArrayDataset) else ArrayDataset(images)
        super().__init__(dataset, batch_size, shuffle, drop_last, seed)
        self.noise, self.level, self.clip = noise, level, clip

    def epoch(self, epoch):
        """The (noisy, clean) batches of epoch ``epoch``, shuffled and corrupted by its own generator."""
        for clean, _, rng in self._batches(epoch):
            yield apply_noise(self.noise, clean, self.level, rng=rng, clip=self.clip), clean
