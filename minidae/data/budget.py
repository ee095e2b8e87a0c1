"""What reading data may cost, checked before the read is made (docs/usage.md, "Data budgets").

* ``max_data_bytes()``: the most one data source may unpack to, 1 GiB unless ``$MINIDAE_MAX_DATA_MB`` says
  otherwise: an ``.npy`` array, the members of an ``.npz`` that are read, an IDX file's payload (gzipped or not),
  or a folder's pictures as S x S bytes. Each is known before anything is allocated or decompressed (the
  ``.npy`` header, the IDX header, the number of pictures), so a small file that claims a huge array is refused
  at once, in one line.
* ``MAX_PICTURE_PIXELS``: the most pixels one picture may have (64 megapixels), read from its header before
  it is decoded.
"""
import os

__all__ = ["max_data_bytes", "MAX_PICTURE_PIXELS", "DEFAULT_MAX_DATA_MB", "size_text", "over_budget"]

DEFAULT_MAX_DATA_MB = 1024
MAX_PICTURE_PIXELS = 64_000_000


def max_data_bytes():
    """The data budget in bytes: $MINIDAE_MAX_DATA_MB mebibytes (a positive whole number), else 1 GiB."""
    text = os.environ.get("MINIDAE_MAX_DATA_MB", "").strip()
    if not text:
        return DEFAULT_MAX_DATA_MB << 20
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"MINIDAE_MAX_DATA_MB={text}: expected a positive whole number of mebibytes (the default "
                         f"is {DEFAULT_MAX_DATA_MB})")
    return int(text) << 20


def size_text(count):
    """A byte count for people: 512 B, 3.1 MiB, 2.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            break
        count /= 1024
    return f"{count} B" if unit == "B" else f"{count:.1f} {unit}"


def over_budget(what, declared):
    """The end of the one-line refusal for ``what`` (e.g. "its images would take") ``declared`` bytes, where that is
    more than the budget; None where it fits."""
    budget = max_data_bytes()
    if declared <= budget:
        return None
    return (f"{what} {size_text(declared)}, more than the data budget of {size_text(budget)}; use a smaller file "
            f"(or fewer, smaller pictures), or raise the budget with MINIDAE_MAX_DATA_MB="
            f"{-(-declared // (1 << 20))} if you have the memory")
