"""The numpy-free .npy reader used for DecodingTrust's fairness arrays."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from comptrust_core import ConfigError
from comptrust_evaluate.tasks._npy import read_npy_1d, write_npy_1d

QUICK = Path(__file__).parents[1] / "src" / "comptrust_evaluate" / "data" / "quick" / "fairness" / "fairness_data"


def _npy(descr: str, count: int, body: bytes) -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({count},), }}".encode()
    header += b" " * (63 - len(header) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


def test_reads_packaged_arrays() -> None:
    assert read_npy_1d(QUICK / "sensitive_attr_adult_0_200_test_base_rate_0.5.npy") == [
        "Male",
        "Female",
        "Male",
        "Female",
    ]
    assert read_npy_1d(QUICK / "gt_labels_crime_0_300_test_base_rate_0.5.npy") == [0, 1]


def test_reads_handmade_arrays(tmp_path: Path) -> None:
    ints = tmp_path / "i.npy"
    ints.write_bytes(_npy("<i8", 3, struct.pack("<3q", 5, -1, 7)))
    assert read_npy_1d(ints) == [5, -1, 7]
    text = tmp_path / "u.npy"
    text.write_bytes(_npy("<U3", 2, "ab\x00cde".encode("utf-32-le")))
    assert read_npy_1d(text) == ["ab", "cde"]
    bad = tmp_path / "f.npy"
    bad.write_bytes(_npy("<f8", 1, struct.pack("<d", 1.0)))
    with pytest.raises(ConfigError, match="unsupported dtype"):
        read_npy_1d(bad)


def test_written_arrays_read_back(tmp_path: Path) -> None:
    ints, strings = tmp_path / "i.npy", tmp_path / "s.npy"
    write_npy_1d(ints, [0, 1, 1, 0, 7])
    write_npy_1d(strings, ["Female", "Male", "Male"])
    assert read_npy_1d(ints) == [0, 1, 1, 0, 7]
    assert read_npy_1d(strings) == ["Female", "Male", "Male"]
    for path in (ints, strings):
        header_end = path.read_bytes().index(b"\n") + 1
        assert header_end % 64 == 0  # the format's alignment
