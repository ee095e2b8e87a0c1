"""Data: a verifying IDX reader and writer, MNIST / Fashion-MNIST loaders, your own images, noise models, batching."""
from . import noise
from .images import DataError, ImageSet, load_images
from .loader import ArrayDataset, DataLoader, NoisyBatches
from .datasets import DatasetUnavailable, data_root, fetch, load_fashion_mnist, load_mnist
from .idx import IDXError, read_idx, write_idx

__all__ = ["IDXError", "read_idx", "write_idx", "DatasetUnavailable", "data_root", "fetch", "load_mnist",
           "load_fashion_mnist", "noise", "NoisyBatches", "ArrayDataset", "DataLoader", "load_images", "ImageSet",
           "DataError"]
