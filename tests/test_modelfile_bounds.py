"""Model files cannot make loading allocate more than they hold: each way a pickle can ask
for memory (memo indices, string lengths, frames, array shapes, dtype states, containers)
is refused in one line, in a child process whose peak memory is measured."""

import codecs
import json
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from numpycnn.engine import reference_network
from numpycnn.modelfile import ModelFileError, load_model, save_model

NORMALIZATION = {"strategy": "standard", "mean": 33.3, "std": 78.6}
#: The child's peak resident memory: Python, NumPy and numpycnn take about 30 MB here, the
#: reference pickle 1 MB (and its parameters, twice over, 2 MB).
MAX_RSS_MB = 200
#: The child's address space (NumPy and numpycnn take about 100 MB of it), so that a
#: regression fails quickly instead of taking the machine's memory (before the fix, one
#: 10-byte file took 4.1 GB, and one changed byte of the reference pickle 20 GB).
ADDRESS_SPACE = 2**30

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from numpycnn.modelfile import ModelFileError, load_model
    results = []
    for path in sys.argv[1:]:
        try:
            load_model(path)
            results.append("loaded")
        except ModelFileError as exc:
            results.append(str(exc))
    # ru_maxrss would include the parent's memory (Linux keeps it across fork and exec):
    # VmHWM is this program's own peak resident memory
    status = open("/proc/self/status").read()
    peak_kb = int(status.split("VmHWM:")[1].split()[0])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({{"results": results, "max_rss_mb": peak_kb / 1024,
                       "cpu_seconds": usage.ru_utime + usage.ru_stime}}))
    """
).format(limit=ADDRESS_SPACE)


def load_in_child(paths):
    """Load each file in one fresh process with bounded address space; its outcomes (an
    error line or "loaded"), its peak resident memory and its CPU time."""
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def assert_bounded(report):
    for line in report["results"]:
        assert "MemoryError" not in line, line  # the address-space limit was hit
    assert report["max_rss_mb"] < MAX_RSS_MB, report["max_rss_mb"]


def proto(n):
    return b"\x80" + bytes([n])


class Reduces:
    """An object that pickles as ``reduce`` (a __reduce__ tuple): any call, any state."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def crafted():
    """name -> (pickle bytes, words the refusal must contain)."""
    example = np.zeros(1)
    reconstruct, frombuffer = example.__reduce__()[0], example.__reduce_ex__(5)[0]
    scalar = np.float64(0).__reduce__()[0]
    f8 = np.dtype("f8")
    nested = [0]
    for _ in range(200):
        nested = [nested]
    shared = [0]
    for _ in range(60):
        shared = [shared, shared]  # 2**60 items, expanded
    cyclic = []
    cyclic.append(cyclic)
    # a V8 dtype whose state marks it as holding objects (NumPy then crashes on its arrays)
    objects_flag = Reduces(np.dtype, ("V8", False, True), (3, "|", None, None, None, 8, 1, 63))
    return {
        "memo index far beyond the file": (
            proto(2) + b"K\x01r" + struct.pack("<I", 0x10000000) + b".",
            "memo index",
        ),
        "get of a memo index never stored": (
            proto(2) + b"j" + struct.pack("<I", 0x7FFFFFFF) + b".",
            "never stored",
        ),
        "text PUT with a huge index": (b"I1\np99999999999\n.", "memo index"),
        "unicode longer than the file": (
            proto(2) + b"X" + struct.pack("<I", 0xFFFFFFF0) + b"ab.",
            "truncated",
        ),
        "bytes8 longer than the file": (
            proto(4) + b"\x8e" + struct.pack("<Q", 2**40) + b"ab.",
            "truncated",
        ),
        "frame longer than the file": (
            proto(4) + b"\x95" + struct.pack("<Q", 2**40) + b"N.",
            "truncated",
        ),
        "_reconstruct of a huge empty array": (
            pickle.dumps(Reduces(reconstruct, (np.ndarray, (2**30,), b"b")), 2),
            "initial shape",
        ),
        "array state with a shape far beyond its data": (
            pickle.dumps(
                Reduces(reconstruct, (np.ndarray, (0,), b"b"), (1, (2**30,), f8, False, bytes(8))),
                3,
            ),
            "needs 8,589,934,592 bytes but the file holds 8",
        ),
        "frombuffer with a shape beyond its buffer": (
            pickle.dumps(Reduces(frombuffer, (bytes(8), f8, (2**30, 2**30), "C")), 5),
            "bytes but the file holds 8",
        ),
        "object array": (pickle.dumps(np.array([1, "a"], dtype=object), 2), "refused dtype"),
        "dtype state marking plain bytes as objects": (pickle.dumps(objects_flag, 2), "V8"),
        "float64 state with the object flags": (
            pickle.dumps(
                Reduces(np.dtype, ("f8", False, True), (3, "<", None, None, None, -1, -1, 63)), 2
            ),
            "refused state (3, '<', None, None, None, -1, -1, 63) for dtype float64",
        ),
        "scalar of a huge dtype": (
            pickle.dumps(Reduces(scalar, (np.dtype("S999999999"), b"a")), 4),
            "needs 999,999,999 bytes",
        ),
        "bytearray of a size": (pickle.dumps(Reduces(bytearray, (2**31,)), 4), "bytearray"),
        "encode with another codec": (
            pickle.dumps(Reduces(codecs.encode, ("a", "hex")), 2),
            "latin-1",
        ),
        "containers nested 200 deep": (pickle.dumps(nested, 4), "nested deeper"),
        "shared references expanding to 2**60 items": (pickle.dumps(shared, 4), "expand"),
        "a list that holds itself": (pickle.dumps(cyclic, 4), "holds itself"),
        "class instances": (proto(2) + b"(c__builtin__\nset\no.", "class instances"),
        "200,000 empty sets from 200 KB": (
            proto(4) + b"(" + b"\x8f" * 200_000 + b"l.",
            "more than 16,250 containers for a file of 200,005 bytes",
        ),
    }


def test_crafted_pickles_are_refused_in_one_line_with_bounded_memory(tmp_path):
    cases = crafted()
    paths, expected = [], []
    for i, (name, (data, words)) in enumerate(cases.items()):
        path = tmp_path / f"case-{i}.pkl"
        path.write_bytes(data)
        paths.append(path)
        expected.append((name, words))
    report = load_in_child(paths)
    assert_bounded(report)
    for (name, words), path, line in zip(expected, paths, report["results"]):
        assert line != "loaded", name
        assert line.startswith(f"{path}: ") and "\n" not in line, (name, line)
        assert words in line, (name, line)


def test_the_one_byte_change_to_the_reference_pickle_is_refused(tmp_path, reference_params_path):
    """Offset 905919 is the top byte of a LONG_BINPUT index: 5957 becomes 1.3 billion, for
    which the C unpickler sized its memo at 20 GB."""
    data = bytearray(reference_params_path.read_bytes())
    assert data[905919] == 0x00
    data[905919] = 0x4E
    path = tmp_path / "mutated.pkl"
    path.write_bytes(bytes(data))
    report = load_in_child([reference_params_path, path])
    assert_bounded(report)
    assert report["results"][0] == "loaded"
    assert "memo index 1,308,628,805 at byte 905915 is out of bounds" in report["results"][1]


def test_a_network_larger_than_its_file_is_refused_before_it_is_built(tmp_path):
    model = reference_network()
    path = tmp_path / "model.pkl"
    save_model(path, model, NORMALIZATION)
    stored = pickle.loads(path.read_bytes())
    stored["layers"][6]["units"] = 10**9  # dense(128) -> a billion units: 10**12 weights
    path.write_bytes(pickle.dumps(stored, 5))
    with pytest.raises(ModelFileError, match="has 811,000,001,826 parameters, more than"):
        load_model(path)


def test_legitimate_pickles_still_load(tmp_path):
    """Every protocol, byte orders, Fortran order, strings and scalars, sets and bytes."""
    from numpycnn import safepickle

    value = [
        np.arange(6.0).reshape(2, 3),
        np.asfortranarray(np.ones((2, 3), dtype=np.float32)),
        np.arange(3).astype(">i4"),
        np.array(["ab", "c"]),
        np.float64(2.5),
        np.int64(7),
        {1, 2},
        frozenset({3}),
        1 + 2j,
        b"xy",
        bytearray(b"z"),
        {"nested": [[1, (2, 3)]]},
    ]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        loaded = safepickle.loads(pickle.dumps(value, protocol))
        for a, b in zip(value, loaded):
            if isinstance(a, np.ndarray):
                assert a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=")
                assert np.array_equal(a, b)
            else:
                assert a == b and type(a) is type(b)


def test_control_characters_from_the_file_do_not_break_the_one_line_error(tmp_path):
    path = tmp_path / "model.pkl"
    save_model(path, reference_network(), NORMALIZATION)
    stored = pickle.loads(path.read_bytes())
    stored["layers"][0]["ker\nnel"] = stored["layers"][0].pop("kernel")
    path.write_bytes(pickle.dumps(stored, 5))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert "\n" not in str(info.value) and "ker\\nnel" in str(info.value)


def test_layers_that_are_not_specs_are_refused(tmp_path):
    path = tmp_path / "model.pkl"
    save_model(path, reference_network(), NORMALIZATION)
    stored = pickle.loads(path.read_bytes())
    stored["layers"][3] = None
    path.write_bytes(pickle.dumps(stored, 5))
    with pytest.raises(ModelFileError, match="layers must be a list of layer specs"):
        load_model(path)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("cost", [10**400], "cost must be a list of numbers"),
        ("normalization", {"strategy": "standard", "mean": 10**5000, "std": 1.0}, "got a dict"),
        ("format", 10**5000, "not a numpycnn model file (format an int)"),
        ("loss", ["softmax"], "loss must be a loss name, got a list"),
        ("input_shape", [1, 28], "layer 1 (conv2d) needs an input of channels x height x"),
    ],
    ids=["huge-cost", "huge-mean", "huge-format", "list-loss", "2-d-input"],
)
def test_values_no_model_holds_are_one_line_errors(tmp_path, key, value, message):
    """Numbers too large for a float or for a repr, and shapes or types the network cannot
    take, were tracebacks (OverflowError, ValueError) or accepted."""
    path = tmp_path / "model.pkl"
    save_model(path, reference_network(), NORMALIZATION)
    stored = pickle.loads(path.read_bytes())
    stored[key] = value
    path.write_bytes(pickle.dumps(stored, 5))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert message in str(info.value) and len(str(info.value)) < 300


def test_a_pickle_of_more_opcodes_than_any_model_file_is_refused(monkeypatch):
    """Scanning is linear in the opcodes (about 1 us each); the limit, lowered here, keeps a
    huge file of tiny opcodes from taking minutes."""
    from numpycnn import safepickle

    monkeypatch.setattr(safepickle, "MAX_OPCODES", 1000)
    with pytest.raises(safepickle.UnsafePickle, match="more than 1,000 opcodes"):
        safepickle.loads(proto(4) + b"N0" * 600 + b"N.")
    assert safepickle.loads(proto(4) + b"N0" * 400 + b"N.") is None
