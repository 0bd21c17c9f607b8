"""The IDX parser: real MNIST files, round trips, and malformed files reported by name."""

import gzip
import struct

import numpy as np
import pytest

from numpycnn import data
from numpycnn.data import DataError, read_idx

# IDX type code of each dtype the round trips use.
CODES = {"uint8": 0x08, "int32": 0x0C, "float64": 0x0E}


def idx_bytes(array, code=None, shape=None):
    """An IDX file's bytes for array; code and shape override what the header declares."""
    code = CODES[array.dtype.name] if code is None else code
    shape = array.shape if shape is None else shape
    header = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, raw):
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def test_reads_the_real_training_files(mnist_dir):
    images = read_idx(mnist_dir / data.TRAIN_IMAGES)
    labels = read_idx(mnist_dir / data.TRAIN_LABELS)

    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    assert np.array_equal(np.unique(labels), np.arange(10))


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([[-(2**31), 0], [7, 2**31 - 1]], dtype=np.int32),
        np.array([0.5, -1e300, np.inf]),
    ],
    ids=["uint8-3d", "int32-2d", "float64-1d"],
)
def test_round_trip(tmp_path, array, suffix):
    result = read_idx(write(tmp_path / f"x-idx{suffix}", idx_bytes(array)))

    assert result.dtype == array.dtype and result.dtype.isnative
    assert np.array_equal(result, array)


GOOD = np.zeros((3, 4, 5), dtype=np.uint8)
MALFORMED = {
    "wrong magic": (b"\x08\x03\0\0" + idx_bytes(GOOD)[4:], "not an IDX file"),
    "unknown type code": (idx_bytes(GOOD, code=0x0A), "unknown IDX data type code 0x0a"),
    "no dimensions": (b"\0\0\x08\x00", "declares no dimensions"),
    "truncated header": (idx_bytes(GOOD)[:10], "header truncated"),
    "truncated payload": (
        idx_bytes(GOOD)[:-7],
        "payload has 53 bytes, but dimensions 3x4x5 need 60",
    ),
    "extra bytes": (idx_bytes(GOOD) + b"\0", "payload has 61 bytes"),
    "wrong dimensions": (idx_bytes(GOOD, shape=(3, 5, 5)), "dimensions 3x5x5 need 75"),
    "empty": (b"", "0 bytes, too short"),
}


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_files_are_reported_by_name_and_reason(tmp_path, case, suffix):
    raw, reason = MALFORMED[case]
    path = write(tmp_path / f"bad-idx3-ubyte{suffix}", raw)

    with pytest.raises(DataError) as caught:
        read_idx(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert reason in str(caught.value)


def test_empty_file_with_a_gz_name(tmp_path):
    path = tmp_path / "empty-idx1-ubyte.gz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty-idx1-ubyte.gz: 0 bytes, too short"):
        read_idx(path)


def test_non_gzip_bytes_with_a_gz_name(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)))
    with pytest.raises(DataError, match="labels-idx1-ubyte.gz: not a valid gzip file"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(4000, dtype=np.uint8)))[:-20])
    with pytest.raises(DataError, match="images-idx3-ubyte.gz: not a valid gzip file"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="absent-idx1-ubyte: cannot read"):
        read_idx(tmp_path / "absent-idx1-ubyte")
