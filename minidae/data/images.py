"""Your own images: a folder of picture files, an array file (.npy / .npz) or an IDX file, read into uint8 arrays.

``load_images(path, image_size=28)`` returns an :class:`ImageSet`: the images as uint8 (N, S, S) (S =
``image_size``; float arrays in [0, 1] are kept as float32), their labels where the source has them, and a line
saying what was read. The rules, the same for training and for the command line (``minidae train --data``):

* **A folder**: every PNG, JPEG, BMP, TIFF or GIF file under it (sub-folders included, in sorted order);
  other files are skipped and counted. Images in sub-folders are labelled by the sub-folder under the root
  they sit in (torchvision's ImageFolder: ``root/cat/1.png`` is class "cat"), in sorted order of those names;
  images directly in the root have no label. A file with an image suffix that Pillow cannot read is refused,
  named.
* **Each picture** becomes grayscale (colour by Pillow's luma, ITU-R 601; a transparent image is first laid on
  white, as a viewer shows it; 16-bit and floating-point TIFFs are scaled to 0..255, floats from [0, 1]), then
  is centre-cropped to a square and resized to S x S with Lanczos resampling (Pillow's ``ImageOps.fit``).
* **An array file**: ``.npy`` holding (N, H, W) or (N, 1, H, W) images, uint8 0..255 or float in [0, 1];
  ``.npz`` holding one such array, or several with the images under ``images`` (and labels under ``labels``).
  Arrays are used at their own size: they must already be S x S.
* **An IDX file** (``*-idx3-ubyte``, gzipped or not), as MNIST's; labels come from the sibling file of the
  same name with ``labels``/``idx1`` in place of ``images``/``idx3``, if there is one.
"""
import os
import pathlib
from dataclasses import dataclass

import numpy

from .idx import IDXError, read_idx

__all__ = ["ImageSet", "DataError", "load_images", "picture_to_array", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


class DataError(ValueError):
    """A data path that holds no usable images, or a file in it that cannot be read (the message names it)."""


@dataclass
class ImageSet:
    """Images uint8 (N, S, S) (or float32 in [0, 1]), labels int64 (N,) or None, class names (for a folder of
    class sub-folders) and a one-line description of where they came from."""
    images: numpy.ndarray
    labels: numpy.ndarray = None
    classes: list = None
    source: str = ""

    def __len__(self):
        return len(self.images)

    def subset(self, index, source):
        """The images (and labels) at ``index``, with ``source`` saying where they came from."""
        return ImageSet(self.images[index], None if self.labels is None else self.labels[index], self.classes, source)


def picture_to_array(image, size):
    """A Pillow image as uint8 (size, size): grayscale, centre-cropped to a square, resized (module docstring)."""
    from PIL import Image, ImageOps
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = numpy.asarray(image, dtype=numpy.float64)
        image = Image.fromarray(numpy.clip(values / (257 if image.mode.startswith("I;16") else 1), 0, 255)
                                .astype(numpy.uint8))
    elif image.mode == "F":
        values = numpy.asarray(image, dtype=numpy.float64)
        scale = 255 if values.size and values.max() <= 1 else 1
        image = Image.fromarray(numpy.clip(numpy.nan_to_num(values * scale), 0, 255).astype(numpy.uint8))
    image = image.convert("L")
    return numpy.asarray(ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS), dtype=numpy.uint8)


def _read_picture(path, size):
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.load()
            return picture_to_array(image, size)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: too large to read safely ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc}); remove it or convert it") from None


def _folder(root, size, progress=False):
    files, skipped = [], 0
    for directory, subdirectories, names in os.walk(root):
        subdirectories.sort()
        for name in sorted(names):
            path = pathlib.Path(directory, name)
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
            elif not name.startswith("."):
                skipped += 1
    if not files:
        raise DataError(f"{root}: no image files (PNG, JPEG, BMP, TIFF, GIF) in it or under it"
                        + (f"; {skipped} other files skipped" if skipped else ""))
    top = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files]
    classes = sorted({t for t in top if t is not None})
    labelled = len(classes) >= 1 and all(t is not None for t in top)
    from tqdm import tqdm
    images = numpy.stack([_read_picture(p, size) for p in tqdm(files, desc=f"reading {root}", unit="image",
                                                                 disable=not progress or len(files) < 1000)])
    labels = numpy.array([classes.index(t) for t in top], dtype=numpy.int64) if labelled else None
    what = f"{len(files)} images from the folder {root}" + (f" ({len(classes)} classes)" if labelled else "")
    return ImageSet(images, labels, classes if labelled else None,
                    what + (f", {skipped} non-image file{'s' * (skipped != 1)} skipped" if skipped else ""))


def _as_images(array, path, size):
    """(N, H, W) or (N, 1, H, W), uint8 or float in [0, 1] -> uint8 or float32 (N, H, W), checked."""
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or len(array) == 0:
        raise DataError(f"{path}: expected images of shape (N, H, W) or (N, 1, H, W), got {array.shape}")
    if array.dtype == numpy.uint8:
        images = array
    elif array.dtype.kind == "f":
        if not numpy.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise DataError(f"{path}: float images must lie in [0, 1] (got [{numpy.nanmin(array)}, "
                            f"{numpy.nanmax(array)}]); divide uint8 images by 255 or store them as uint8")
        images = array.astype(numpy.float32)
    else:
        raise DataError(f"{path}: images must be uint8 (0..255) or float in [0, 1], got {array.dtype}")
    if images.shape[1:] != (size, size):
        raise DataError(f"{path}: its images are {images.shape[1]} x {images.shape[2]}, not {size} x {size}: resize "
                        f"them, or pass --image-size {images.shape[1]} with a model built for that size"
                        if images.shape[1] == images.shape[2] else
                        f"{path}: its images are {images.shape[1]} x {images.shape[2]}; arrays must hold square "
                        f"images of the size the model takes ({size} x {size})")
    return images


def _array_file(path, size):
    try:
        loaded = numpy.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable NumPy file ({type(exc).__name__}: {exc})") from None
    labels = None
    if isinstance(loaded, numpy.ndarray):
        array = loaded
    else:
        with loaded:
            names = list(loaded.files)
            if len(names) == 1:
                array = loaded[names[0]]
            elif "images" in names:
                array = loaded["images"]
                labels = loaded["labels"] if "labels" in names else None
            else:
                raise DataError(f"{path}: holds {len(names)} arrays ({', '.join(names)}); put the images under the "
                                f"name 'images' (and labels under 'labels'), or save one array")
    images = _as_images(array, path, size)
    if labels is not None and (labels.shape != (len(images),) or labels.dtype.kind not in "iu"):
        raise DataError(f"{path}: 'labels' must be integers of shape ({len(images)},), got {labels.dtype} "
                        f"{labels.shape}")
    return ImageSet(images, None if labels is None else labels.astype(numpy.int64), None,
                    f"{len(images)} images from {path}")


def _idx_file(path, size):
    try:
        images = read_idx(path)
    except (IDXError, OSError) as exc:
        raise DataError(f"{path}: not a readable IDX file ({exc})") from None
    images = _as_images(images, path, size)
    labels, name = None, path.name
    for a, b in (("images", "labels"), ("idx3", "idx1")):
        name = name.replace(a, b)
    sibling = path.with_name(name)
    if sibling != path and sibling.exists():
        try:
            labels = read_idx(sibling).astype(numpy.int64)
        except (IDXError, OSError) as exc:
            raise DataError(f"{sibling}: not a readable IDX labels file ({exc})") from None
        if labels.shape != (len(images),):
            raise DataError(f"{sibling}: {labels.shape} labels for {len(images)} images in {path}")
    return ImageSet(images, labels, None, f"{len(images)} images from {path}"
                    + (f" with labels from {sibling.name}" if labels is not None else ""))


def load_images(path, image_size=28, progress=False):
    """The images at ``path`` (a folder, a .npy/.npz file or an IDX file) as an :class:`ImageSet` (module
    docstring); DataError, naming the path, where it holds no usable image."""
    path = pathlib.Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _folder(path, image_size, progress)
    name = path.name.lower()
    if name.endswith((".npy", ".npz")):
        return _array_file(path, image_size)
    if "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        return _idx_file(path, image_size)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSet(_read_picture(path, image_size)[None], None, None, f"1 image from {path}")
    raise DataError(f"{path}: not a folder of images, a .npy/.npz array or an IDX file")
