"""Your own images: a folder of picture files, an array file (.npy / .npz) or an IDX file, read into uint8 arrays.

``load_images(path, image_size=28, channels=1)`` returns an :class:`ImageSet`: the images as uint8 (N, S, S) for
``channels=1`` or (N, 3, S, S) for ``channels=3`` (S = ``image_size``; float arrays in [0, 1] are kept as
float32), their labels and class names where the source has them, and a line saying what was read. The rules,
the same for training, for ``minidae train --data`` and for ``minidae denoise`` (one function,
:func:`read_picture`, reads every picture):

* **A folder**: every PNG, JPEG, BMP, TIFF or GIF file under it (sub-folders included, in sorted order);
  other files are skipped and counted, and so are hidden files and folders (a name starting with ".", such
  as macOS's ``._x.png``), special files (named pipes, sockets, devices: never opened) and files or
  sub-folders that cannot be read, these three named. Images in sub-folders are labelled by the sub-folder
  under the root they sit in (torchvision's ImageFolder: ``root/cat/1.png`` is class "cat"), in sorted order of
  those names; images directly in the root have no label. A class folder none of whose pictures can be read
  (or that cannot be listed) is refused, as is a file with an image suffix that Pillow cannot read, named.
* **Budgets** (minidae.data.budget), checked before the read: the pictures of a folder, as N x C x S x S bytes,
  an array file's declared arrays and an IDX file's declared payload may take at most 1 GiB
  (``$MINIDAE_MAX_DATA_MB``); a picture's header may declare at most 64 megapixels. Only regular files are
  read.
* **Each picture** (:func:`picture_to_array`), in this order:

  1. 16-bit and floating-point pictures (TIFF, PNG) are brought to 0..255: 16-bit levels / 257, floats in
     [0, 1] times 255 (floats up to 255 as they are; others, or NaN, are refused, naming the file);
  2. a transparent picture is laid on paper that shows its ink: the mean brightness (luma) of its visible
     pixels, weighted by their opacity, decides, white paper behind dark ink and black paper behind light ink
     (a white stroke drawn on a transparent background stays visible, light on black as MNIST's digits);
     a picture with no visible pixel is white;
  3. ``channels=1``: grayscale by Pillow's luma (ITU-R 601); ``channels=3``: RGB (a grayscale picture's
     level in all three); a mode Pillow converts only to RGB (LAB) goes through RGB;
  4. centre-cropped to a square and resized to S x S with Lanczos resampling (Pillow's ``ImageOps.fit``):
     a picture that is not square loses the edges of its longer side, never its proportions.
* **An array file**: ``.npy`` holding (N, H, W), (N, 1, H, W) or, for ``channels=3``, (N, 3, H, W) images
  (channels first, as the networks take them), uint8 0..255 or float in [0, 1]; ``.npz`` holding one such
  array, or several with the images under ``images`` (and labels under ``labels``). Arrays are used at their
  own size and channel count: they must already be S x S, with ``channels`` channels.
* **An IDX file** (``*-idx3-ubyte``, gzipped or not), as MNIST's; labels come from the sibling file of the
  same name with ``labels``/``idx1`` in place of ``images``/``idx3``, if there is one.

:func:`unit_images` turns such uint8 or [0, 1] images into the float32 (N, C, H, W) batches a network takes.
"""
import math
import os
import pathlib
import stat
import zipfile
import zlib
from dataclasses import dataclass

import numpy

from .. import backend
from ..files import SpecialFile, file_kind, open_regular
from .budget import MAX_PICTURE_PIXELS, over_budget, size_text
from .idx import IDXError, read_idx

__all__ = ["ImageSet", "DataError", "load_images", "read_picture", "picture_to_array", "unit_images", "check_images",
           "IMAGE_SUFFIXES", "CHANNELS"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
CHANNELS = (1, 3)  # grayscale, or RGB colour


class DataError(ValueError):
    """A data path that holds no usable images, or a file in it that cannot be read (the message names it)."""


@dataclass
class ImageSet:
    """Images uint8 (N, S, S) or (N, 3, S, S) (or float32 in [0, 1]), labels int64 (N,) or None, class names (for
    a folder of class sub-folders), a one-line description of where they came from, and whether they were read
    from picture files (``pictures``; False for arrays, which are taken as they are)."""
    images: numpy.ndarray
    labels: numpy.ndarray = None
    classes: list = None
    source: str = ""
    pictures: bool = False

    def __len__(self):
        return len(self.images)

    @property
    def channels(self):
        """1 for grayscale images (N, S, S), else the channel count of (N, C, S, S)."""
        return 1 if self.images.ndim == 3 else int(self.images.shape[1])

    def subset(self, index, source):
        """The images (and labels) at ``index``, with ``source`` saying where they came from."""
        return ImageSet(self.images[index], None if self.labels is None else self.labels[index], self.classes, source,
                        self.pictures)


def unit_images(images):
    """Images (N, H, W) or (N, C, H, W), uint8 0..255 or float in [0, 1] -> float32 (N, C, H, W) in [0, 1] on the
    active backend (C = 1 for (N, H, W)): what a network takes."""
    xp = backend.xp
    images = xp.asarray(images)
    images = (images.astype(xp.float32) / 255) if images.dtype == numpy.uint8 else images.astype(xp.float32)
    return images[:, None] if images.ndim == 3 else images


def check_images(images, who):
    """ValueError, in one line starting with ``who``, unless ``images`` are images as :func:`unit_images` takes
    them: (N, H, W) or (N, C, H, W), uint8, or float in [0, 1]."""
    dtype = getattr(images, "dtype", None)
    if getattr(images, "ndim", None) not in (3, 4) or dtype is None or not (dtype == numpy.uint8 or dtype.kind == "f"):
        raise ValueError(f"{who}: expected images (N, H, W) or (N, C, H, W), uint8 or float in [0, 1], got "
                         f"{dtype if dtype is not None else type(images).__name__} "
                         f"{tuple(getattr(images, 'shape', ()))}")
    if dtype.kind == "f" and images.size and not (float(images.min()) >= 0 and float(images.max()) <= 1):
        raise ValueError(f"{who}: float images must lie in [0, 1], got [{float(images.min())}, "
                         f"{float(images.max())}]; divide 0..255 images by 255, or pass them as uint8")


def _eight_bit(image, name):
    """A 16-bit, 32-bit integer or floating-point picture as a Pillow "L" image of levels 0..255 (rule 1 of the
    module docstring); other pictures as they are."""
    from PIL import Image
    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return image
    values = numpy.asarray(image, dtype=numpy.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F":
        if not (math.isfinite(low) and math.isfinite(high) and low >= 0 and high <= 255):
            raise DataError(f"{name}: its floating-point pixels span [{low}, {high}]; minidae reads them as levels "
                            f"in [0, 1] (or [0, 255]): rescale the picture first")
        values = values * (255 if high <= 1 else 1)
    elif image.mode != "I" or high > 255:  # 16-bit levels (a 32-bit "I" picture holding them too)
        values = values / 257
    return Image.fromarray(numpy.round(numpy.clip(values, 0, 255)).astype(numpy.uint8), mode="L")


def _on_paper(image):
    """A transparent picture laid on the paper that shows its ink (rule 2): white behind dark ink, black behind
    light ink, judged by the opacity-weighted mean luma of its pixels; a picture with no visible pixel on white.
    An RGB Pillow image; a picture without transparency as it is."""
    from PIL import Image
    if not (image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info):
        return image
    rgba = numpy.asarray(image.convert("RGBA"), dtype=numpy.float64)
    rgb, alpha = rgba[..., :3], rgba[..., 3:] / 255
    luma = rgb @ numpy.array([299, 587, 114]) / 1000  # ITU-R 601, as Pillow's "L"
    covered = float(alpha.sum())
    paper = 255.0 if covered == 0 or float((luma * alpha[..., 0]).sum()) / covered < 128 else 0.0
    return Image.fromarray(numpy.round(rgb * alpha + paper * (1 - alpha)).astype(numpy.uint8), mode="RGB")


def picture_to_array(image, size, channels=1, name="the picture"):
    """A Pillow image as uint8 (size, size) for ``channels=1`` or (3, size, size) for ``channels=3``, by the one
    rule of the module docstring: levels to 0..255, transparency laid on paper that shows the ink, grayscale or
    RGB, centre-cropped to a square and resized with Lanczos. ``name`` (the file) is what an error names."""
    from PIL import Image, ImageOps
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB colour), got {channels!r}")
    image = _on_paper(_eight_bit(image, name))
    try:
        image = image.convert("L" if channels == 1 else "RGB")
    except ValueError:  # Pillow converts some modes (LAB) only to RGB: through it, or one line naming the mode
        try:
            image = image.convert("RGB").convert("L" if channels == 1 else "RGB")
        except ValueError:
            raise DataError(f"{name}: Pillow cannot convert its colour mode {image.mode} to "
                            f"{'grayscale' if channels == 1 else 'RGB'}; save it as RGB or grayscale") from None
    array = numpy.asarray(ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS), dtype=numpy.uint8)
    return array if channels == 1 else numpy.ascontiguousarray(array.transpose(2, 0, 1))


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
    except UnidentifiedImageError:  # its message names the open file by its repr, "<_io.BufferedReader name=4>"
        f.close()
        raise DataError(f"{path}: not a readable image (Pillow cannot identify it as a picture); remove it or "
                        f"convert it") from None
    except (OSError, ValueError, SyntaxError) as exc:
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


def read_picture(path, size, channels=1):
    """The picture file at ``path`` as uint8 (size, size), or (3, size, size) for ``channels=3``: the one rule of
    the module docstring, for ``train --data`` and ``denoise`` alike. DataError (one line, naming the file) for a
    file that is not a regular file or not a readable picture, or whose header declares too many pixels; OSError
    where it cannot be opened."""
    image, f = _open_picture(path)
    from PIL import Image
    try:
        with f, image:
            image.load()
            return picture_to_array(image, size, channels, name=str(path))
    except DataError:
        raise
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


def _folder(root, size, progress=False, channels=1):
    skipped = _Skipped()
    found = _scan(root, skipped)
    if not found:
        raise DataError(f"{root}: no image files (PNG, JPEG, BMP, TIFF, GIF) in it or under it" + skipped.text())
    refusal = over_budget(f"{root}: its {len(found)} pictures at {size} x {size}" + (" in colour" if channels > 1 else "")
                          + " would take", len(found) * channels * size * size)
    if refusal:
        raise DataError(refusal)
    from tqdm import tqdm
    shape = (size, size) if channels == 1 else (channels, size, size)
    images, kept = numpy.empty((len(found), *shape), dtype=numpy.uint8), []
    for index, (path, _) in enumerate(tqdm(found, desc=f"reading {root}", unit="image",
                                           disable=not progress or len(found) < 1000)):
        try:
            images[index] = read_picture(path, size, channels)
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
    what = (f"{len(kept)} image{'s' * (len(kept) != 1)} from the folder {root}"
            + (f" ({len(classes)} classes)" if labelled else ""))
    return ImageSet(images, labels, classes if labelled else None, what + skipped.text(), pictures=True)


def _as_images(array, path, size, channels=1):
    """(N, H, W), (N, 1, H, W) or, for ``channels=3``, (N, 3, H, W), uint8 or float in [0, 1] -> uint8 or float32
    (N, H, W) or (N, 3, H, W), checked."""
    shape = tuple(array.shape)
    if array.ndim == 4 and array.shape[1] not in (1, 3) and array.shape[3] in (1, 3):
        raise DataError(f"{path}: its images are channels-last, {shape}; minidae takes them channels first, "
                        f"(N, C, H, W): save array.transpose(0, 3, 1, 2)")
    if array.ndim == 4 and array.shape[1] == 1 and channels == 1:
        array = array[:, 0]
    if channels == 3 and not (array.ndim == 4 and array.shape[1] == 3 and len(array)):
        raise DataError(f"{path}: expected colour images of shape (N, 3, H, W) for --channels 3, got {shape}"
                        + ("; these are grayscale: leave --channels at 1" if array.ndim == 3 or
                           (array.ndim == 4 and array.shape[1] == 1) else ""))
    if channels == 1 and array.ndim == 4 and array.shape[1] == 3:
        raise DataError(f"{path}: its images have 3 channels (colour), {shape}: give --channels 3 to train on them "
                        f"in colour, or store them as grayscale (N, H, W)")
    if channels == 1 and (array.ndim != 3 or len(array) == 0):
        raise DataError(f"{path}: expected images of shape (N, H, W) or (N, 1, H, W), got {shape}")
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
    height, width = images.shape[-2:]
    if (height, width) != (size, size):
        raise DataError(f"{path}: its images are {height} x {width}, not {size} x {size}: resize them, or pass "
                        f"--image-size {height} with a model built for that size" if height == width else
                        f"{path}: its images are {height} x {width}; arrays must hold square images of the size the "
                        f"model takes ({size} x {size})")
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


def _array_file(path, size, channels=1):
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
    images = _as_images(array, path, size, channels)
    if labels is not None and (labels.shape != (len(images),) or labels.dtype.kind not in "iu"):
        raise DataError(f"{path}: 'labels' must be integers of shape ({len(images)},), got {labels.dtype} "
                        f"{labels.shape}")
    return ImageSet(images, None if labels is None else labels.astype(numpy.int64), None,
                    f"{len(images)} image{'s' * (len(images) != 1)} from {path}")


def _idx_file(path, size, channels=1):
    try:
        images = read_idx(path)
    except (IDXError, OSError) as exc:
        raise DataError(f"{path}: not a readable IDX file ({exc})") from None
    images = _as_images(images, path, size, channels)
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
            raise DataError(f"{sibling}: {labels.shape} labels for {len(images)} image{'s' * (len(images) != 1)} in "
                            f"{path}")
    return ImageSet(images, labels, None, f"{len(images)} image{'s' * (len(images) != 1)} from {path}"
                    + (f" with labels from {sibling.name}" if labels is not None else ""))


def load_images(path, image_size=28, progress=False, channels=1):
    """The images at ``path`` (a folder, a picture, a .npy/.npz file or an IDX file) as an :class:`ImageSet`:
    grayscale (N, S, S) for ``channels=1``, RGB (N, 3, S, S) for ``channels=3`` (module docstring); DataError,
    naming the path, where it holds no usable image."""
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB colour), got {channels!r}")
    path = pathlib.Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or folder") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        return _folder(path, image_size, progress, channels)
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: {file_kind(mode)}, not a regular file; minidae reads data only from regular "
                        f"files and folders of them")
    name = path.name.lower()
    if name.endswith((".npy", ".npz")):
        return _array_file(path, image_size, channels)
    if "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        return _idx_file(path, image_size, channels)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSet(read_picture(path, image_size, channels)[None], None, None, f"1 image from {path}",
                        pictures=True)
    raise DataError(f"{path}: not a folder of images, a .npy/.npz array or an IDX file")
