"""``numpycnn predict``: real MNIST test digits saved as images of several kinds."""

import json

import numpy as np
import pytest
from cli_helpers import digit_files, error_line, invoke, last_json, real_mnist, variant
from PIL import Image


@pytest.fixture
def digits(tmp_path, mnist_dir):
    """The first ten MNIST test digits as PNG files of each kind in turn: (paths, labels)."""
    return digit_files(tmp_path, real_mnist(mnist_dir), 10)


def test_predicts_the_digits(digits, reference_params_path):
    paths, labels = digits

    result = invoke("predict", "--params", reference_params_path, *paths)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(paths)
    for line, path, label in zip(lines, paths, labels):
        name, rest = line.split(": ")
        assert name == str(path)
        digit, percent = rest.split(" ")
        assert int(digit) == label
        assert 90 < float(percent.strip("(%)")) <= 100


def test_top_k_text(digits, reference_params_path):
    paths, labels = digits

    result = invoke("predict", "--params", reference_params_path, "--top-k", 3, paths[0])

    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    head, top = line.split("  top: ")
    assert head.startswith(f"{paths[0]}: {labels[0]} (")
    ranked = [item.split(" ") for item in top.split(", ")]
    assert len(ranked) == 3 and ranked[0][0] == str(labels[0])
    percents = [float(p.rstrip("%")) for _, p in ranked]
    assert percents == sorted(percents, reverse=True)


def test_json_lists_file_digit_probability_and_top_k(digits, reference_params_path):
    paths, labels = digits

    result = invoke("predict", "--params", reference_params_path, "--json", "--top-k", 4, *paths)

    assert result.exit_code == 0, result.output
    results = last_json(result)
    assert [r["file"] for r in results] == [str(p) for p in paths]
    assert [r["digit"] for r in results] == labels
    for r in results:
        assert set(r) == {"file", "class", "index", "digit", "probability", "top_k"}
        assert r["class"] == str(r["digit"]) and r["index"] == r["digit"]  # MNIST's names
        assert len(r["top_k"]) == 4
        assert r["top_k"][0] == {
            "class": r["class"],
            "index": r["index"],
            "digit": r["digit"],
            "probability": r["probability"],
        }
        probs = [t["probability"] for t in r["top_k"]]
        assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
        assert len({t["digit"] for t in r["top_k"]}) == 4


def test_all_ten_probabilities_sum_to_one(digits, reference_params_path):
    paths, _ = digits

    result = invoke("predict", "--params", reference_params_path, "--json", "--top-k", 10, paths[3])

    (r,) = json.loads(result.stdout)
    assert sorted(t["digit"] for t in r["top_k"]) == list(range(10))
    assert sum(t["probability"] for t in r["top_k"]) == pytest.approx(1.0)
    # the default top-k is 1
    (r,) = last_json(invoke("predict", "--params", reference_params_path, "--json", paths[3]))
    assert len(r["top_k"]) == 1


def bad_image(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "text":
        path.write_text("this is not a picture\n")
    elif kind == "truncated":
        variant(np.eye(28, dtype=np.uint8) * 255, "big").save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "blank":
        Image.new("L", (28, 28), 255).save(path)
    elif kind == "gif":
        path = tmp_path / "digit.gif"
        variant(np.eye(28, dtype=np.uint8) * 255, "plain").save(path)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "file not found"),
        ("text", "not an image (or a format Pillow cannot read)"),
        ("truncated", "corrupted or truncated image"),
        ("blank", "no ink found"),
        ("gif", "unsupported image format GIF (use PNG, JPEG or BMP)"),
    ],
)
def test_bad_image_is_one_line_naming_the_file(
    tmp_path, digits, reference_params_path, kind, message
):
    path = bad_image(tmp_path, kind)
    good = digits[0][0]

    result = invoke("predict", "--params", reference_params_path, good, path)

    line = error_line(result)
    assert line.startswith(f"{path}: {message}"), line
    assert result.stdout == ""  # nothing printed for the good image either


def test_default_params_file(tmp_path, monkeypatch, digits):
    monkeypatch.chdir(tmp_path)
    assert error_line(invoke("predict", digits[0][0])).startswith(
        "default.pkl: no such file (the model `numpycnn train` saves"
    )


def test_truncated_params_file(tmp_path, digits, reference_params_path):
    params = tmp_path / "cut.pkl"
    params.write_bytes(reference_params_path.read_bytes()[:5000])

    line = error_line(invoke("predict", "--params", params, digits[0][0]))

    assert line == f"{params}: not a valid pickle (pickle data was truncated)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Missing argument 'IMAGES...'."),
        (["--top-k", "0", "x.png"], "Invalid value for '--top-k': 0 is not in the range x>=1."),
    ],
)
def test_usage_errors(args, message):
    assert error_line(invoke("predict", *args), code=2) == message


def test_top_k_above_the_class_count_is_one_line(digits, reference_params_path):
    """--top-k is bounded by the model's classes (a folder may have hundreds), said once
    the model is read."""
    paths, _ = digits
    line = error_line(invoke("predict", "--params", reference_params_path, "--top-k", 11, paths[0]))
    assert line == "--top-k 11: the model has 10 classes"


def bomb_png(width, height):
    """A valid PNG header that declares ``width`` x ``height`` pixels, in a few hundred bytes."""
    import struct
    import zlib

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 8)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("side", "shown"), [(8000, "8000x8000"), (20000, "over 178,956,970")])
def test_a_huge_image_is_refused_cleanly(tmp_path, digits, reference_params_path, side, shown):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(side, side))

    result = invoke("predict", "--params", reference_params_path, digits[0][0], bomb)

    line = error_line(result)
    assert line == f"{bomb}: image too large ({shown} pixels; the limit is 40,000,000)"
    assert "DecompressionBomb" not in result.stderr


def test_a_directory_predicts_every_image_in_sorted_order(
    tmp_path, mnist_dir, reference_params_path
):
    folder = tmp_path / "scans"
    folder.mkdir()
    paths, labels = digit_files(folder, real_mnist(mnist_dir), 6)
    (folder / "notes.txt").write_text("not a picture")
    (folder / ".hidden.png").write_bytes(b"ignored")
    (folder / "sub").mkdir()
    Image.new("L", (30, 30), 255).save(folder / "blank.png")

    result = invoke("predict", "--params", reference_params_path, "--json", folder)

    assert result.exit_code == 0, result.output
    ordered = sorted(zip(paths, labels))
    assert [r["file"] for r in last_json(result)] == [str(p) for p, _ in ordered]
    assert [r["digit"] for r in last_json(result)] == [label for _, label in ordered]
    assert result.stderr.splitlines() == [
        f"Warning: skipped {folder / '.hidden.png'}: a hidden file",
        f"Warning: skipped {folder / 'blank.png'}: no ink found (blank image: contrast 0 of 255 "
        "grey levels)",
        f"Warning: skipped {folder / 'notes.txt'}: not an image (or a format Pillow cannot read)",
        f"Warning: skipped {folder / 'sub'}/: a folder (folders in a folder are not searched)",
    ]


def test_a_directory_and_files_together(tmp_path, digits, reference_params_path):
    paths, labels = digits
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "a.png").write_bytes(paths[0].read_bytes())

    result = invoke("predict", "--params", reference_params_path, "--json", paths[1], folder)

    assert result.exit_code == 0, result.output
    results = last_json(result)
    assert [r["file"] for r in results] == [str(paths[1]), str(folder / "a.png")]
    assert [r["digit"] for r in results] == [labels[1], labels[0]]


def test_a_directory_without_images_is_an_error(tmp_path, reference_params_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.md").write_text("# nothing here")

    result = invoke("predict", "--params", reference_params_path, folder)

    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.splitlines() == [
        f"Warning: skipped {folder / 'readme.md'}: not an image (or a format Pillow cannot read)",
        f"Error: {folder}: no digit images in this directory",
    ]
