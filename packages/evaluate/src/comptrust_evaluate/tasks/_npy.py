"""Read (and write) the 1-D ``.npy`` arrays DecodingTrust's fairness data ships (integers or fixed-width unicode),
without numpy."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

from comptrust_core import ConfigError

__all__ = ["read_npy_1d", "write_npy_1d"]

_MAGIC = b"\x93NUMPY"
_INTS = {"<i8": "<q", "<i4": "<i", "<i2": "<h", "|i1": "<b", "<u8": "<Q", "<u4": "<I", "|u1": "<B", "|b1": "<?"}


def read_npy_1d(path: Path) -> list[int | str]:
    """The values of a 1-D, C-ordered array of little-endian integers or ``<U<n>`` strings."""
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise ConfigError(f"{path} is not a .npy file")
    major = data[6]
    if major == 1:
        (header_len,) = struct.unpack("<H", data[8:10])
        start = 10
    else:
        (header_len,) = struct.unpack("<I", data[8:12])
        start = 12
    try:
        header = ast.literal_eval(data[start : start + header_len].decode("latin1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise ConfigError(f"{path}: unreadable .npy header") from None
    if fortran or len(shape) != 1:
        raise ConfigError(f"{path}: only 1-D C-ordered arrays are supported, found shape {shape}")
    body = data[start + header_len :]
    count = int(shape[0])
    if descr in _INTS:
        fmt = _INTS[descr]
        size = struct.calcsize(fmt)
        return [int(v) for (v,) in struct.iter_unpack(fmt, body[: count * size])]
    if descr.startswith("<U"):
        width = int(descr[2:])
        out: list[int | str] = []
        for i in range(count):
            chunk = body[i * 4 * width : (i + 1) * 4 * width]
            out.append(chunk.decode("utf-32-le").rstrip("\x00"))
        return out
    raise ConfigError(f"{path}: unsupported dtype {descr!r}")


def write_npy_1d(path: Path, values: list[int] | list[str]) -> None:
    """A 1-D ``.npy`` (version 1.0) of little-endian int64, or of ``<U<n>`` strings if ``values`` are strings."""
    strings = [v for v in values if isinstance(v, str)]
    if strings:
        width = max((len(v) for v in strings), default=1) or 1
        descr = f"<U{width}"
        body = b"".join(str(v).ljust(width, "\x00").encode("utf-32-le") for v in values)
    else:
        descr = "<i8"
        body = struct.pack(f"<{len(values)}q", *values)
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({len(values)},), }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    path.write_bytes(_MAGIC + b"\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + body)
