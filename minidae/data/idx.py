"""The IDX file format (MNIST's), read with every claim in the header checked.

Layout, all integers big-endian:
    bytes 0-1   zero
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions, D >= 1
    4 * D       the size of each dimension, uint32
    then        prod(sizes) elements, row-major, big-endian

``read_idx`` reads the header, checks that the file can hold what it claims, and that it fits the data
budget (minidae.data.budget), *before* allocating, then reads the payload straight into the result array (one copy, from the
file) and byte-swaps it in place where needed. gzip files are recognised by their magic
bytes, not their name.
"""
import gzip
import math
import os
import struct
import tempfile
import zlib

import numpy

from ..files import SpecialFile, open_regular
from .budget import max_data_bytes, size_text

__all__ = ["IDXError", "read_idx", "write_idx", "IDX_DTYPES"]

IDX_DTYPES = {0x08: numpy.dtype(numpy.uint8), 0x09: numpy.dtype(numpy.int8), 0x0B: numpy.dtype(numpy.int16),
              0x0C: numpy.dtype(numpy.int32), 0x0D: numpy.dtype(numpy.float32), 0x0E: numpy.dtype(numpy.float64)}
_CODES = {dtype: code for code, dtype in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data by more than about this factor


class IDXError(ValueError):
    """A file that is not a valid IDX file; the message names the file and the problem."""


def _read_exactly(stream, size, path, what):
    data = stream.read(size)
    if len(data) != size:
        raise IDXError(f"{path}: truncated {what}: expected {size} bytes, found {len(data)}")
    return data


def read_idx(path, max_bytes=None):
    """Read an IDX file (raw or gzip) into an array of the dtype its header names.

    Raises IDXError for a file that is not a regular one (a named pipe, a device: never opened), an empty file,
    bad magic, an unknown type code, zero dimensions, a header claiming more data than the file can hold or
    than ``max_bytes`` (default: the data budget, minidae.data.budget) allows, a truncated payload, trailing
    bytes or a corrupt gzip stream. The budget is checked on the header, before anything is decompressed.
    """
    path = os.fspath(path)
    try:
        raw = open_regular(path)
    except SpecialFile as exc:
        raise IDXError(str(exc)) from None
    with raw:
        raw_size = os.fstat(raw.fileno()).st_size
        if raw_size == 0:
            raise IDXError(f"{path}: empty file")
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        max_bytes = max_data_bytes() if max_bytes is None else max_bytes
        if not gzipped:
            return _read_stream(raw, path, raw_size, gzipped, max_bytes)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_stream(stream, path, raw_size, gzipped, max_bytes)
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise IDXError(f"{path}: corrupt gzip stream ({type(exc).__name__}: {exc})") from exc


def _read_stream(stream, path, raw_size, gzipped, max_bytes):
    zero, code, ndim = struct.unpack(">HBB", _read_exactly(stream, 4, path, "header"))
    if zero != 0:
        raise IDXError(f"{path}: bad magic number: the first two bytes must be zero, got 0x{zero:04x}")
    if code not in IDX_DTYPES:
        raise IDXError(f"{path}: unknown element type code 0x{code:02x}; "
                       f"known: {', '.join(f'0x{c:02X}' for c in IDX_DTYPES)}")
    if ndim == 0:
        raise IDXError(f"{path}: header declares zero dimensions")
    shape = struct.unpack(f">{ndim}I", _read_exactly(stream, 4 * ndim, path, "dimension sizes"))
    dtype = IDX_DTYPES[code]
    header_size = 4 + 4 * ndim
    payload_size = math.prod(shape) * dtype.itemsize
    # The most payload the file can hold: exact for a raw file, deflate's bound for gzip.
    limit = raw_size * _DEFLATE_MAX_RATIO if gzipped else raw_size - header_size
    if payload_size > limit and gzipped:
        raise IDXError(f"{path}: header claims shape {shape} of {dtype.name} ({payload_size} bytes), more "
                       f"than the {raw_size}-byte gzip file can hold")
    if payload_size > limit:
        raise IDXError(f"{path}: truncated payload: shape {shape} of {dtype.name} needs {payload_size} bytes "
                       f"after the header, the file has {limit}")
    if payload_size > max_bytes:
        raise IDXError(f"{path}: header claims shape {shape} of {dtype.name}, which would take "
                       f"{size_text(payload_size)}, more than the data budget of {size_text(max_bytes)}; use a "
                       f"smaller file, or raise the budget with MINIDAE_MAX_DATA_MB="
                       f"{-(-payload_size // (1 << 20))} if you have the memory")
    array = numpy.empty(shape, dtype=dtype)
    view = memoryview(array.reshape(-1).view(numpy.uint8))
    filled = 0
    while filled < payload_size:
        count = stream.readinto(view[filled:])
        if not count:
            raise IDXError(f"{path}: truncated payload: shape {shape} of {dtype.name} needs {payload_size} "
                           f"bytes, found {filled}")
        filled += count
    if stream.read(1):
        raise IDXError(f"{path}: trailing bytes after the {payload_size}-byte payload of shape {shape}")
    if dtype.itemsize > 1 and numpy.little_endian:
        array.byteswap(inplace=True)  # the file is big-endian; the array's dtype is native
    return array


def write_idx(path, array):
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ".gz").

    The file is written to a temporary name and renamed into place, so a reader never
    sees half a file.
    """
    path = os.fspath(path)
    array = numpy.asarray(array)
    if array.dtype not in _CODES:
        raise IDXError(f"{path}: cannot write dtype {array.dtype}; IDX holds "
                       f"{', '.join(d.name for d in IDX_DTYPES.values())}")
    if not 1 <= array.ndim <= 255:
        raise IDXError(f"{path}: IDX needs 1 to 255 dimensions, got an array of shape {array.shape}")
    header = struct.pack(f">HBB{array.ndim}I", 0, _CODES[array.dtype], array.ndim, *array.shape)
    payload = array.astype(array.dtype.newbyteorder(">"), copy=False).tobytes()
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".idx")
    try:
        with os.fdopen(handle, "wb") as out:
            if path.endswith(".gz"):
                with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as compressed:
                    compressed.write(header + payload)
            else:
                out.write(header + payload)
        os.chmod(temporary, 0o644)  # mkstemp's files are private; these are ordinary data files
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
