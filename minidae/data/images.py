"""Your own images: a folder of picture files, an array file (.npy / .npz) or an IDX file, read into uint8 arrays.

``load_images(path, image_size=28)`` returns an :class:`ImageSet`: the images as uint8 (N, S, S) (S =
``image_size``; float arrays in [0, 1] are kept as float32), their labels where the source has them, and a line
saying what was read. The rules, the same for training and for the command line (``minidae train --data``):

* **A folder**: every PNG, JPEG, BMP, TIFF or GIF file under it (sub-folders included, in sorted order);
  other files are skipped and counted, and so are hidden files and folders (a name starting with ".", such
  as macOS's ``._x.png``), special files (named pipes, sockets, devices: never opened) and files or
  sub-folders that cannot be read, these three named. Images in sub-folders are labelled by the sub-folder
  under the root they sit in (torchvision's ImageFolder: ``root/cat/1.png`` is class "cat"), in sorted order of
  those names; images directly in the root have no label. A class folder none of whose pictures can be read
  (or that cannot be listed) is refused, as is a file with an image suffix that Pillow cannot read, named.
* **Budgets** (minidae.data.budget), checked before the read: the pictures of a folder, as N x S x S bytes, an
  array file's declared arrays and an IDX file's declared payload may take at most 1 GiB
  (``$MINIDAE_MAX_DATA_MB``); a picture's header may declare at most 64 megapixels. Only regular files are
  read.
* **Each picture** becomes grayscale (colour by Pillow's luma, ITU-R 601; a transparent image is first laid on
  white, as a viewer shows it; 16-bit and floating-point TIFFs are scaled to 0..255, floats from [0, 1]), then
  is centre-cropped to a square and resized to S x S with Lanczos resampling (Pillow's ``ImageOps.fit``).
* **An array file**: ``.npy`` holding (N, H, W) or (N, 1, H, W) images, uint8 0..255 or float in [0, 1];
  ``.npz`` holding one such array, or several with the images under ``images`` (and labels under ``labels``).
  Arrays are used at their own size: they must already be S x S.
* **An IDX file** (``*-idx3-ubyte``, gzipped or not), as MNIST's; labels come from the sibling file of the
  same name with ``labels``/``idx1`` in place of ``images``/``idx3``, if there is one.
"""
import math
import os
import pathlib
import stat
import zipfile
import zlib
from dataclasses import dataclass

import numpy

from ..files import SpecialFile, file_kind, open_regular
from .budget import MAX_PICTURE_PIXELS, over_budget, size_text
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


class _Skipped:
    """What a folder's reading left out, by kind, with the names of the first few (relative to the root)."""
    KINDS = {"other": "non-image file", "hidden": "hidden file", "special": "special file",
             "unreadable": "unreadable file or folder"}

    def __init__(self):
        self.names = {kind: [] for kind in self.KINDS}

    def add(self, kind, name):
        self.names[kind].append(name)

    def text(self):
        """", 1 non-image file skipped, 2 hidden files skipped (._a.png, ._b.png), ..."" or ""."""
        parts = []
        for kind, noun in self.KINDS.items():
            names, count = self.names[kind], len(self.names[kind])
            if count:
                shown = "" if kind == "other" else \
                    f" ({', '.join(names[:3])}{f', and {count - 3} more' if count > 3 else ''})"
                parts.append(f"{count} {noun}{'s' * (count != 1)} skipped{shown}".replace("file or folders",
                                                                                          "files or folders"))
        return "".join(f", {part}" for part in parts)


def _open_picture(path):
    """(the Pillow image at ``path``, opened but not decoded, its file); DataError where it is not a regular
    file or not an image, or where its header declares more than MAX_PICTURE_PIXELS (checked before decoding).
    OSError (a PermissionError, say) where it cannot be opened."""
    from PIL import Image, UnidentifiedImageError
    try:
        f = open_regular(path)
    except SpecialFile as exc:
        raise DataError(str(exc)) from None
    try:
        image = Image.open(f)
    except Image.DecompressionBombError as exc:
        f.close()
        raise DataError(f"{path}: too large to read safely ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        f.close()
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc}); remove it or convert it") \
            from None
    width, height = image.size
    if width * height > MAX_PICTURE_PIXELS:
        image.close()
        f.close()
        raise DataError(f"{path}: its header declares {width} x {height} pixels, more than the "
                        f"{MAX_PICTURE_PIXELS:,} a picture may have (minidae.data.budget); shrink it first "
                        f"(minidae resizes it to at most 1024 x 1024 anyway)")
    return image, f


def _read_picture(path, size):
    image, f = _open_picture(path)
    from PIL import Image
    try:
        with f, image:
            image.load()
            return picture_to_array(image, size)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: too large to read safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc}); remove it or convert it") \
            from None


def _scan(root, skipped):
    """[(picture path, its class folder or None)] under ``root`` in order (a folder's files, sorted, then its
    sub-folders, sorted); what is left out goes to ``skipped``: hidden files and folders (a name starting with
    "."), files of other kinds, special files (named pipes, sockets, devices: never opened) and what cannot
    be listed or examined. The root, or a class folder (a sub-folder of the root), that cannot be listed is
    refused (DataError): its pictures would be left out without a word."""
    found = []

    def visit(directory, top):
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            if directory == root or directory.parent == root:
                what = "the folder" if directory == root else "the class folder"
                raise DataError(f"{directory}: {what} cannot be read ({exc.strerror or exc}); its pictures would be "
                                f"left out: make it readable, or move it out of {root}") from None
            skipped.add("unreadable", f"{directory.relative_to(root)}/ ({exc.strerror or exc})")
            return
        folders = []
        for entry in entries:
            relative = pathlib.Path(entry.path).relative_to(root)
            if entry.name.startswith("."):  # .DS_Store, ._x.png (macOS resource forks), .git/
                skipped.add("hidden", str(relative) + "/" * entry.is_dir(follow_symlinks=False))
                continue
            try:
                mode = entry.stat().st_mode  # links followed
            except OSError as exc:  # a broken link, or a folder we may list but not examine
                skipped.add("unreadable", f"{relative} ({exc.strerror or exc})")
                continue
            if stat.S_ISDIR(mode):
                if entry.is_symlink():
                    skipped.add("other", str(relative))  # as os.walk: links to folders are not followed
                else:
                    folders.append(entry)
            elif not stat.S_ISREG(mode):
                skipped.add("special", f"{relative}: {file_kind(mode)}")
            elif pathlib.Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                found.append((pathlib.Path(entry.path), top))
            else:
                skipped.add("other", str(relative))
        for entry in folders:
            visit(pathlib.Path(entry.path), entry.name if top is None else top)

    visit(pathlib.Path(root), None)
    return found


def _folder(root, size, progress=False):
    skipped = _Skipped()
    found = _scan(root, skipped)
    if not found:
        raise DataError(f"{root}: no image files (PNG, JPEG, BMP, TIFF, GIF) in it or under it" + skipped.text())
    refusal = over_budget(f"{root}: its {len(found)} pictures at {size} x {size} would take", len(found) * size * size)
    if refusal:
        raise DataError(refusal)
    from tqdm import tqdm
    images, kept = numpy.empty((len(found), size, size), dtype=numpy.uint8), []
    for index, (path, _) in enumerate(tqdm(found, desc=f"reading {root}", unit="image",
                                           disable=not progress or len(found) < 1000)):
        try:
            images[index] = _read_picture(path, size)
            kept.append(index)
        except OSError as exc:  # cannot be opened (permissions): left out, counted and named
            skipped.add("unreadable", f"{path.relative_to(root)} ({exc.strerror or exc})")
    top = [found[index][1] for index in kept]
    classes = sorted({t for _, t in found if t is not None})
    labelled = len(classes) >= 1 and all(t is not None for _, t in found)
    if labelled:
        empty = [name for name in classes if name not in top]
        if empty:
            raise DataError(f"{root / empty[0]}: none of the pictures of the class folder could be read"
                            f"{skipped.text()}; make them readable, or move the folder out of {root}")
    if not kept:
        raise DataError(f"{root}: none of its pictures could be read{skipped.text()}")
    labels = numpy.array([classes.index(t) for t in top], dtype=numpy.int64) if labelled else None
    images = images[kept] if len(kept) < len(found) else images
    what = f"{len(kept)} images from the folder {root}" + (f" ({len(classes)} classes)" if labelled else "")
    return ImageSet(images, labels, classes if labelled else None, what + skipped.text())


def _as_images(array, path, size):
    """(N, H, W) or (N, 1, H, W), uint8 or float in [0, 1] -> uint8 or float32 (N, H, W), checked."""
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or len(array) == 0:
        raise DataError(f"{path}: expected images of shape (N, H, W) or (N, 1, H, W), got {array.shape}")
    if array.dtype == numpy.uint8:
        images = array
    elif array.dtype.kind == "f":
        finite = numpy.isfinite(array)
        if not finite.all():
            bad = int(array.size - numpy.count_nonzero(finite))
            first = numpy.unravel_index(int(numpy.argmin(finite.reshape(-1))), array.shape)
            raise DataError(f"{path}: {bad:,} of its float pixels are NaN or infinite (the first in image "
                            f"{int(first[0])}, at {tuple(int(i) for i in first[1:])}); images must be float in "
                            f"[0, 1] or uint8")
        if array.min() < 0 or array.max() > 1:
            raise DataError(f"{path}: float images must lie in [0, 1] (got [{array.min()}, {array.max()}]); divide "
                            f"uint8 images by 255 or store them as uint8")
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


def _npy(f, path, key, available):
    """The array of the .npy stream ``f`` (``available`` bytes long), its header checked first: no Python
    objects, and a declared size that the stream holds and the data budget allows."""
    try:
        version = numpy.lib.format.read_magic(f)
        read_header = {(1, 0): numpy.lib.format.read_array_header_1_0,
                       (2, 0): numpy.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise DataError(f"{path}: {key}is in .npy format version {version}, which minidae does not read")
        shape, fortran, dtype = read_header(f)
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: {key}not a readable NumPy array ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: {key}holds Python objects; minidae reads plain arrays only")
    declared = math.prod(shape) * dtype.itemsize
    refusal = over_budget(f"{path}: {key}declares shape {shape} of {dtype}, which would take", declared)
    if refusal:
        raise DataError(refusal)
    if f.tell() + declared > available:
        raise DataError(f"{path}: {key}declares shape {shape} of {dtype} ({size_text(declared)}), but holds "
                        f"{size_text(max(available - f.tell(), 0))} for it (truncated or damaged)")
    f.seek(0)
    try:
        return numpy.lib.format.read_array(f, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: {key}not a readable NumPy array ({type(exc).__name__}: {exc})") from None


def _names(names, shown=8):
    """At most ``shown`` names, then how many more."""
    return ", ".join(names[:shown]) + (f", and {len(names) - shown:,} more" if len(names) > shown else "")


def _array_file(path, size):
    try:
        f = open_regular(path)
    except SpecialFile as exc:
        raise DataError(str(exc)) from None
    labels = None
    with f:
        available = os.fstat(f.fileno()).st_size
        if path.name.lower().endswith(".npy") or f.read(6) == b"\x93NUMPY":
            f.seek(0)
            array = _npy(f, path, "", available)
        else:
            f.seek(0)
            try:
                with zipfile.ZipFile(f) as archive:
                    infos = {info.filename[:-4]: info for info in archive.infolist()
                             if info.filename.endswith(".npy")}
                    names = list(infos)
                    if len(names) == 1:
                        chosen = names
                    elif "images" in names:
                        chosen = ["images"] + (["labels"] if "labels" in names else [])
                    else:
                        raise DataError(f"{path}: holds {len(names):,} arrays ({_names(names) or 'none'}); put the "
                                        f"images under the name 'images' (and labels under 'labels'), or save one "
                                        f"array")
                    declared = sum(infos[name].file_size for name in chosen)
                    refusal = over_budget(f"{path}: its arrays {', '.join(chosen)} unpack to", declared)
                    if refusal:
                        raise DataError(refusal)
                    arrays = []
                    for name in chosen:
                        with archive.open(infos[name]) as member:
                            arrays.append(_npy(member, path, f"{name}: ", infos[name].file_size))
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
                if isinstance(exc, DataError):
                    raise
                raise DataError(f"{path}: not a readable NumPy file ({type(exc).__name__}: {exc})") from None
            array = arrays[0]
            labels = arrays[1] if len(arrays) > 1 else None
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
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or folder") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        return _folder(path, image_size, progress)
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: {file_kind(mode)}, not a regular file; minidae reads data only from regular "
                        f"files and folders of them")
    name = path.name.lower()
    if name.endswith((".npy", ".npz")):
        return _array_file(path, image_size)
    if "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        return _idx_file(path, image_size)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSet(_read_picture(path, image_size)[None], None, None, f"1 image from {path}")
    raise DataError(f"{path}: not a folder of images, a .npy/.npz array or an IDX file")
