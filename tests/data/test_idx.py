"""read_idx / write_idx: round trips, every error, and a fuzz of mutated files."""
import gzip
import struct

import numpy as np
import pytest

from minidae.data import IDXError, read_idx, write_idx
from minidae.data.idx import IDX_DTYPES

SHAPES = [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2), (0, 4)]


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", list(IDX_DTYPES.values()), ids=lambda d: d.name)
def test_round_trip(tmp_path, dtype, shape, compressed):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    array = (rng.integers(info.min, info.max, size=shape, endpoint=True) if info else rng.normal(size=shape) * 1e3)
    array = array.astype(dtype)
    path = tmp_path / ("a.idx.gz" if compressed else "a.idx")
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compressed
    result = read_idx(path)
    assert result.dtype == dtype and result.dtype.isnative and result.shape == shape
    np.testing.assert_array_equal(result, array)
    assert result.flags.writeable


def test_big_endian_layout_on_disk(tmp_path):
    write_idx(tmp_path / "a", np.array([1, 258], dtype=np.int32))
    assert (tmp_path / "a").read_bytes() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 2])


def header(code=0x08, dims=(2, 3)):
    return struct.pack(f">HBB{len(dims)}I", 0, code, len(dims), *dims)


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"\x00\x00", "truncated header"),
    (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x05", "bad magic number"),
    (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x05", "unknown element type code 0x07"),
    (b"\x00\x00\x08\x00", "zero dimensions"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated dimension sizes"),
    (header() + bytes(5), r"truncated payload: shape \(2, 3\) of uint8 needs 6 bytes after the header, the file has 5"),
    (header(0x0E) + bytes(47), "truncated payload"),
    (header() + bytes(7), "trailing bytes"),
    (header(0x08, (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)), "truncated payload: shape .* needs 792281624"),
])
def test_errors(tmp_path, content, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(IDXError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_gzip_errors(tmp_path):
    good = gzip.compress(header() + bytes(6))
    cases = {"truncated-gzip": good[:-12], "corrupt-gzip": good[:12] + bytes(len(good) - 12),
             "short-payload": gzip.compress(header() + bytes(5)),
             "huge-claim": gzip.compress(header(0x08, (0xFFFFFFFF, 0xFFFFFFFF)))}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(IDXError, match="corrupt gzip|truncated payload|more than the") as info:
            read_idx(path)
        assert name in str(info.value)


def test_write_rejects_unsupported_arrays(tmp_path):
    with pytest.raises(IDXError, match="cannot write dtype int64"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.int64))
    with pytest.raises(IDXError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "a", np.float32(1.0))


def reference_decode(data):
    """Straightforward decoder: the array ``data`` encodes, or None if it is not exactly valid IDX."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_DTYPES or data[3] == 0:
        return None
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = IDX_DTYPES[data[2]].newbyteorder(">")
    if len(data) - 4 - 4 * ndim != int(np.prod(shape, dtype=object)) * dtype.itemsize:
        return None
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)


def mutations(rng, count):
    for case in range(count):
        dtype = list(IDX_DTYPES.values())[case % len(IDX_DTYPES)]
        shape = tuple(int(s) for s in rng.integers(1, 4, size=rng.integers(1, 4)))
        data = bytearray(header(list(IDX_DTYPES)[case % len(IDX_DTYPES)], shape)
                         + rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8).tobytes())
        kind = case % 5
        if kind == 0:      # flip random header bytes
            for _ in range(rng.integers(1, 3)):
                data[int(rng.integers(0, 4 + 4 * len(shape)))] = int(rng.integers(0, 256))
        elif kind == 1:    # truncate anywhere
            del data[int(rng.integers(0, len(data))):]
        elif kind == 2:    # append bytes
            data += bytes(int(rng.integers(1, 9)))
        elif kind == 3:    # rewrite one dimension size
            at = 4 + 4 * int(rng.integers(0, len(shape)))
            data[at:at + 4] = struct.pack(">I", int(rng.choice([0, 1, 2, 5, 1 << 20, 0xFFFFFFFF])))
        else:              # flip payload bytes only: still a valid file
            data[-1] ^= 0xFF
        yield bytes(data)


def test_fuzz_only_idx_error_or_the_right_array(tmp_path):
    rng = np.random.default_rng(12345)
    outcomes = {"error": 0, "array": 0}
    for case, data in enumerate(mutations(rng, 400)):
        for compressed in (False, True):
            path = tmp_path / f"case{case}{'.gz' if compressed else ''}"
            path.write_bytes(gzip.compress(data) if compressed else data)
            expected = reference_decode(data)
            try:
                result = read_idx(path)
            except IDXError:
                assert expected is None, f"case {case}: valid file rejected"
                outcomes["error"] += 1
                continue
            assert expected is not None, f"case {case}: invalid file accepted"
            np.testing.assert_array_equal(result, expected)
            outcomes["array"] += 1
    assert outcomes["error"] > 400 and outcomes["array"] > 150, outcomes
