"""The folder source: class-per-folder trees of PNG, JPEG, BMP and GIF files in every
colour mode, broken files among them; fitting and stretching; the split; the decoding
cache; every bad input; and real MNIST digits written as PNGs and read back losslessly."""

import os

import numpy as np
import pytest
from PIL import Image

from numpycnn import datasets
from numpycnn.data import DataError
from numpycnn.datasets import folder, images


def save(path, image, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def grey(value, size=(28, 28)):
    return Image.new("L", size, value)


@pytest.fixture
def opened(monkeypatch):
    """Counts the image files Pillow opens."""
    count = {"n": 0}
    original = Image.open

    def counting(*args, **kwargs):
        count["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    return count


def load(path, data_dir, **options):
    return folder.load(path, data_dir=data_dir, threads=1, **options)


# ----- colour modes and formats -----


def mixed_tree(root):
    """Three classes, every format and mode, known colours; four broken files and files
    that are not read at all. Returns {relative path: expected grey value}."""
    expected = {}

    def put(rel, image, value, **kwargs):
        save(root / rel, image, **kwargs)
        expected[rel] = value

    put("ant/grey.png", grey(77), 77)
    put("ant/rgb.bmp", Image.new("RGB", (28, 28), (200, 100, 50)), 124)  # luma 601-2
    put("ant/sub/deeper.png", grey(12), 12)  # subfolders count
    put("ant/upper.PNG", grey(99), 99)  # extensions in any case
    put("bee/clear.png", Image.new("RGBA", (28, 28), (255, 0, 0, 0)), 255)  # on white
    put("bee/half.png", Image.new("RGBA", (28, 28), (0, 0, 0, 128)), 127)
    put("bee/sixteen.png", Image.fromarray(np.full((28, 28), 257 * 200, np.uint16)), 200)
    put("bee/grey-alpha.png", Image.new("LA", (28, 28), (0, 0)), 255)
    palette = Image.new("P", (28, 28), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    put("cow/palette.gif", palette, 124)  # 0.299*10 + 0.587*200 + 0.114*30
    put("cow/palette.png", palette, 124)
    keyed = palette.copy()
    keyed.info["transparency"] = 1
    put("cow/keyed.png", keyed, 255)  # the transparent palette entry shows white
    put("cow/photo.jpg", Image.new("RGB", (28, 28), (40, 40, 40)), 40)
    put("cow/print.jpg", Image.new("CMYK", (28, 28), (0, 0, 0, 0)), 255)  # no ink: white
    # Broken: a truncated PNG, text named .jpg, an empty file, a JPEG cut short.
    raw = (root / "ant/grey.png").read_bytes()
    (root / "ant/truncated.png").write_bytes(raw[: len(raw) // 2])
    (root / "bee/text.jpg").write_text("not an image")
    (root / "cow/empty.png").write_bytes(b"")
    jpeg = (root / "cow/photo.jpg").read_bytes()
    (root / "cow/cut.jpeg").write_bytes(jpeg[:200])
    # Never read: other extensions, hidden files and folders.
    (root / "ant/notes.txt").write_text("ignored")
    (root / "ant/._grey.png").write_bytes(b"\0\5\26\7 AppleDouble")
    save(root / "bee/.ipynb_checkpoints/x.png", grey(1))
    save(root / ".hidden/x.png", grey(1))
    (root / "README.md").write_text("a file at the top is no class")
    return expected


def test_every_format_and_mode_in_grey(tmp_path):
    expected = mixed_tree(tmp_path / "tree")
    ds = load(tmp_path / "tree", None, test_fraction=0.25)
    assert ds.class_names == ["ant", "bee", "cow"] and ds.input_shape == (1, 28, 28)
    images_ = np.concatenate([ds.train_images, ds.test_images])
    labels = np.concatenate([ds.train_labels, ds.test_labels])
    assert len(images_) == len(expected) == 13
    for label, name in enumerate(ds.class_names):
        got = sorted(int(np.median(x)) for x in images_[labels == label])
        want = sorted(v for rel, v in expected.items() if rel.startswith(name + "/"))
        assert got == want, name
    for x in images_:  # uniform images stay uniform: no resizing at 28x28
        assert x.min() == x.max() or x.max() - x.min() <= 2  # JPEG may wobble by a level
    (warning,) = ds.warnings
    assert warning.startswith(f"{tmp_path / 'tree'}: skipped 4 of 17 image files")
    assert "ant/truncated.png (" in warning and "bee/text.jpg (not an image" in warning
    assert "and 1 more" in warning and "\n" not in warning


def test_colour_images_keep_their_channels(tmp_path):
    root = tmp_path / "tree"
    save(root / "red/a.png", Image.new("RGB", (32, 32), (200, 10, 30)))
    save(root / "red/b.bmp", Image.new("RGB", (32, 32), (201, 11, 31)))
    save(root / "grey/a.png", grey(90, (32, 32)))
    save(root / "grey/b.png", Image.fromarray(np.full((32, 32), 257 * 60, np.uint16)))
    save(root / "clear/a.png", Image.new("RGBA", (32, 32), (0, 0, 255, 0)))
    save(root / "clear/b.gif", Image.new("P", (32, 32), 0))
    ds = load(root, None, input_shape=[3, 32, 32])
    assert ds.input_shape == (3, 32, 32) and ds.class_names == ["clear", "grey", "red"]
    pixels = {
        tuple(int(v) for v in x[:, 5, 5]) for x in np.concatenate([ds.train_images, ds.test_images])
    }
    assert pixels == {
        (200, 10, 30),
        (201, 11, 31),
        (90, 90, 90),
        (60, 60, 60),
        (255, 255, 255),
        (0, 0, 0),
    }


def test_fit_pads_with_the_border_colour_and_stretch_does_not(tmp_path):
    root = tmp_path / "tree"
    page = Image.new("RGB", (120, 60), (30, 60, 90))  # wide, a bright square in the middle
    page.paste((250, 250, 250), (45, 15, 75, 45))
    save(root / "wide/a.png", page)
    tall = Image.new("L", (20, 80), 40)
    tall.paste(255, (0, 0, 20, 2))  # a light line at the top: a minority of the border
    save(root / "tall/a.png", tall)

    fit = load(root, None, input_shape=[3, 28, 28], test_fraction=0.5)
    x = np.concatenate([fit.train_images, fit.test_images])
    y = np.concatenate([fit.train_labels, fit.test_labels])
    wide, tall_x = x[y == 1][0], x[y == 0][0]
    # 120x60 fitted to 28x14, centred: 7 lines of border colour above and below.
    assert (wide[:, :7] == np.array([30, 60, 90])[:, None, None]).all()
    assert (wide[:, 21:] == np.array([30, 60, 90])[:, None, None]).all()
    assert wide[:, 14, 14].min() > 240 and (wide[:, 7:21, 0] < 100).all()
    bright = wide.min(axis=0) > 200
    assert bright.any(axis=1).sum() == bright.any(axis=0).sum()  # still a square
    # 20x80 fitted to 7x28: columns of the median border grey (40) either side.
    assert (tall_x[:, :, :10] == 40).all() and (tall_x[:, :, 18:] == 40).all()
    assert tall_x[0, 0, 12] > 120  # the light line, 0.7 pixels thick after shrinking

    stretched = load(root, None, input_shape=[3, 28, 28], test_fraction=0.5, resize="stretch")
    x = np.concatenate([stretched.train_images, stretched.test_images])
    y = np.concatenate([stretched.train_labels, stretched.test_labels])
    wide = x[y == 1][0]
    # The 30x30 square of the 120x60 page becomes 7 wide and 14 tall: aspect not kept.
    bright = wide.min(axis=0) > 200
    assert 13 <= bright.any(axis=1).sum() <= 14 and 6 <= bright.any(axis=0).sum() <= 7
    assert (wide[:, 0] == np.array([30, 60, 90])[:, None]).all()


def test_shrinking_is_antialiased(tmp_path):
    """A fine 1-pixel checkerboard shrunk 8x averages to mid-grey; a point sampler would
    give pure black or white."""
    root = tmp_path / "tree"
    board = (np.indices((224, 224)).sum(axis=0) % 2 * 255).astype(np.uint8)
    save(root / "a/board.png", Image.fromarray(board))
    save(root / "b/board.png", Image.fromarray(255 - board))
    ds = load(root, None, test_fraction=0.5)
    for x in np.concatenate([ds.train_images, ds.test_images]):
        assert abs(float(x.mean()) - 127.5) < 3 and x.max() - x.min() < 20


def test_large_jpeg_draft_decoding_matches_full_decoding(tmp_path):
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(
        (1600, 1200), Image.Resampling.BICUBIC
    )
    path = save(tmp_path / "big.jpg", smooth, quality=95)
    fast = images.load_image(path, (3, 24, 32), "stretch")
    with Image.open(path) as im:
        full = np.asarray(im.convert("RGB").resize((32, 24), images.RESAMPLE)).transpose(2, 0, 1)
    assert np.abs(fast.astype(int) - full).mean() < 2


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored landscape with "rotate 90 degrees clockwise" in its EXIF."""
    stored = Image.new("L", (16, 8), 0)
    stored.paste(255, (8, 0, 16, 8))  # right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored image's left side is the top when shown
    path = save(tmp_path / "photo.jpg", stored, exif=exif, quality=95)
    x = images.load_image(path, (1, 16, 8), "stretch")[0]
    assert x[:8].max() < 30 and x[8:].min() > 225  # black above, white below


def test_too_large_images_are_skipped_as_unreadable(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    root = tmp_path / "tree"
    save(root / "a/small.png", grey(1, (30, 30)))
    save(root / "a/big.png", grey(2, (40, 40)))
    save(root / "b/small.png", grey(3, (30, 30)))
    ds = load(root, None, test_fraction=0.5)
    assert len(ds.train_images) + len(ds.test_images) == 2
    assert "a/big.png (image too large (40x40 pixels; the limit is 1,000))" in ds.warnings[0]


# ----- layouts and the split -----


def class_tree(root, counts, size=(8, 8)):
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            save(root / name / f"{i:03}.png", grey(k * 40 + i % 7, size))


def test_stratified_split_is_seeded(tmp_path):
    class_tree(tmp_path / "t", {"a": 10, "b": 20, "c": 5, "d": 1})
    ds = load(tmp_path / "t", None, input_shape=[1, 8, 8])
    assert np.bincount(ds.test_labels, minlength=4).tolist() == [2, 4, 1, 0]
    assert np.bincount(ds.train_labels, minlength=4).tolist() == [8, 16, 4, 1]
    assert ds.source["test_fraction"] == 0.2 and ds.source["layout"] == "classes"
    again = load(tmp_path / "t", None, input_shape=[1, 8, 8])
    np.testing.assert_array_equal(again.test_images, ds.test_images)
    np.testing.assert_array_equal(again.train_labels, ds.train_labels)
    other = load(tmp_path / "t", None, input_shape=[1, 8, 8], seed=1)
    assert np.bincount(other.test_labels, minlength=4).tolist() == [2, 4, 1, 0]
    assert not np.array_equal(other.test_images, ds.test_images)
    # Shuffled: the classes are mixed along the training set, not in blocks.
    assert len(set(ds.train_labels[-8:])) > 1
    half = load(tmp_path / "t", None, input_shape=[1, 8, 8], test_fraction=0.5)
    # halves round up: 2.5 of class c's 5 images is 3
    assert np.bincount(half.test_labels, minlength=4).tolist() == [5, 10, 3, 0]


def test_train_and_test_folders(tmp_path):
    root = tmp_path / "t"
    class_tree(root / "train", {"x": 4, "y": 3})
    class_tree(root / "test", {"x": 2, "y": 1})
    (root / "val").mkdir()  # other folders beside train/ and test/ are not read
    ds = load(root, None, input_shape=[1, 8, 8])
    assert ds.class_names == ["x", "y"] and ds.source["layout"] == "split"
    assert sorted(ds.train_labels.tolist()) == [0, 0, 0, 0, 1, 1, 1]
    assert sorted(ds.test_labels.tolist()) == [0, 0, 1]
    assert "test_fraction" not in ds.source


def test_source_description_loads_the_same_data(tmp_path):
    class_tree(tmp_path / "t", {"a": 6, "b": 6})
    ds = datasets.load(
        {"dataset": "folder", "path": str(tmp_path / "t"), "input_shape": [3, 8, 8], "seed": 4},
        data_dir=tmp_path / "data",
    )
    assert ds.source["path"] == str((tmp_path / "t").resolve())
    assert ds.source["input_shape"] == [3, 8, 8] and ds.source["resize"] == "fit"
    again = datasets.load(ds.source, data_dir=tmp_path / "data")
    np.testing.assert_array_equal(again.test_images, ds.test_images)
    np.testing.assert_array_equal(again.train_labels, ds.train_labels)
    assert again.source == ds.source


# ----- the cache -----


def test_second_load_decodes_nothing_and_a_touched_file_invalidates(tmp_path, opened):
    root, data_dir = tmp_path / "t", tmp_path / "data"
    class_tree(root, {"a": 5, "b": 5})
    (root / "b" / "broken.png").write_bytes(b"\x89PNG broken")
    first = load(root, data_dir, input_shape=[1, 8, 8])
    assert opened["n"] == 11
    cached = list((data_dir / "folders").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npz"

    opened["n"] = 0
    second = load(root, data_dir, input_shape=[1, 8, 8])
    assert opened["n"] == 0
    np.testing.assert_array_equal(second.train_images, first.train_images)
    np.testing.assert_array_equal(second.test_labels, first.test_labels)
    assert second.warnings == first.warnings and "b/broken.png" in second.warnings[0]
    assert second.source == first.source

    # Another seed or fraction: the same cache, no decoding.
    load(root, data_dir, input_shape=[1, 8, 8], seed=9, test_fraction=0.4)
    assert opened["n"] == 0

    # Other settings: an entry of their own, beside the first.
    load(root, data_dir, input_shape=[3, 8, 8])
    assert opened["n"] == 11 and len(list((data_dir / "folders").iterdir())) == 2

    opened["n"] = 0
    changed = root / "a" / "002.png"
    save(changed, grey(250, (8, 8)))
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = load(root, data_dir, input_shape=[1, 8, 8])
    assert opened["n"] == 11
    assert third.source["fingerprint"] != first.source["fingerprint"]
    both = np.concatenate([third.train_images, third.test_images])
    assert (both == 250).all(axis=(1, 2, 3)).sum() == 1
    assert len(list((data_dir / "folders").iterdir())) == 2  # the stale entry is gone


def test_a_damaged_cache_entry_is_decoded_again(tmp_path, opened):
    root, data_dir = tmp_path / "t", tmp_path / "data"
    class_tree(root, {"a": 3, "b": 3})
    first = load(root, data_dir, input_shape=[1, 8, 8])
    (entry,) = (data_dir / "folders").iterdir()
    entry.write_bytes(entry.read_bytes()[:300])
    opened["n"] = 0
    again = load(root, data_dir, input_shape=[1, 8, 8])
    assert opened["n"] == 6
    np.testing.assert_array_equal(again.train_images, first.train_images)
    assert entry.stat().st_size > 300
    assert [p.name for p in (data_dir / "folders").iterdir()] == [entry.name]


def test_an_unwritable_cache_is_a_warning_not_a_failure(tmp_path):
    class_tree(tmp_path / "t", {"a": 2, "b": 2})
    (tmp_path / "data").write_text("a file where the data folder should be")
    ds = load(tmp_path / "t", tmp_path / "data", input_shape=[1, 8, 8])
    assert len(ds.train_images) + len(ds.test_images) == 4
    (warning,) = ds.warnings
    assert warning.startswith(f"{tmp_path / 'data' / 'folders'}: could not cache")


def test_an_added_file_invalidates(tmp_path, opened):
    root, data_dir = tmp_path / "t", tmp_path / "data"
    class_tree(root, {"a": 3, "b": 3})
    load(root, data_dir, input_shape=[1, 8, 8])
    save(root / "a" / "new.bmp", Image.new("RGB", (8, 8), (9, 9, 9)))
    opened["n"] = 0
    ds = load(root, data_dir, input_shape=[1, 8, 8])
    assert opened["n"] == 7 and len(ds.train_images) + len(ds.test_images) == 7


def test_threads_and_progress(tmp_path):
    class_tree(tmp_path / "t", {"a": 80, "b": 70})
    events = []

    class Bar:
        def __init__(self, desc, total):
            events.append(("open", desc, total))

        def update(self, n):
            events.append(("update", n))

        def close(self):
            events.append(("close",))

    one = folder.load(tmp_path / "t", input_shape=[1, 8, 8], threads=1, progress=Bar)
    assert events[0] == ("open", "decoding t", 150) and events[-1] == ("close",)
    assert sum(e[1] for e in events if e[0] == "update") == 150
    two = folder.load(tmp_path / "t", input_shape=[1, 8, 8], threads=2)
    np.testing.assert_array_equal(one.train_images, two.train_images)
    np.testing.assert_array_equal(one.test_labels, two.test_labels)


# ----- bad input -----


@pytest.mark.parametrize(
    "build,where,match",
    [
        (lambda r: None, "t", r"no such folder"),
        (lambda r: r.write_text("x"), "t", r"not a folder"),
        (lambda r: class_tree(r, {"only": 2}), "t", r"1 class folder, need at least 2"),
        (lambda r: r.mkdir(), "t", r"0 class folders, need at least 2"),
        (
            lambda r: (class_tree(r, {"a": 2}), (r / "b").mkdir(), (r / "b/x.txt").write_text("")),
            "t/b",
            r"no image files \(.png, .jpg, .jpeg, .bmp, .gif\)",
        ),
        (
            lambda r: (
                class_tree(r, {"a": 2}),
                (r / "b").mkdir(),
                (r / "b/x.png").write_bytes(b"junk"),
                (r / "b/y.gif").write_bytes(b"GIF89a"),
            ),
            "t/b",
            r"none of its 2 image files could be read \(b/x.png: not an image",
        ),
        (lambda r: class_tree(r / "train", {"a": 2, "b": 2}), "t/test", r"missing \(a folder"),
        (
            lambda r: (
                class_tree(r / "train", {"a": 2, "b": 2, "c": 1}),
                class_tree(r / "test", {"a": 1, "d": 1, "e": 1}),
            ),
            "t/test",
            r"class folders differ from train/'s \(no b, c; extra d, e\)",
        ),
        (
            lambda r: (
                class_tree(r / "train", {"a": 2, "b": 2}),
                class_tree(r / "test", {"a": 1}),
                (r / "test/b").mkdir(),
                (r / "test/b/z.png").write_bytes(b""),
            ),
            "t/test/b",
            r"none of its 1 image files could be read",
        ),
    ],
    ids=[
        "missing",
        "file",
        "one-class",
        "empty",
        "no-images",
        "all-broken",
        "no-test",
        "test-differs",
        "test-broken",
    ],
)
def test_bad_folders_are_named(build, where, match, tmp_path):
    build(tmp_path / "t")
    with pytest.raises(DataError, match=match) as err:
        load(tmp_path / "t", tmp_path / "data", input_shape=[1, 8, 8])
    message = str(err.value)
    assert message.startswith(f"{(tmp_path / where).resolve()}: ")
    assert "\n" not in message
    assert not (tmp_path / "data" / "folders").exists() or not any(
        (tmp_path / "data" / "folders").iterdir()
    )


@pytest.mark.parametrize(
    "options,match",
    [
        ({"input_shape": [2, 8, 8]}, r"input_shape must be \[C, H, W\].*got \[2, 8, 8\]"),
        ({"input_shape": [1, 0, 8]}, r"got \[1, 0, 8\]"),
        ({"input_shape": [1, 8]}, r"got \[1, 8\]"),
        ({"input_shape": "big"}, r"got 'big'"),
        ({"input_shape": [1, 8, 8.5]}, r"input_shape"),
        ({"input_shape": [3, 2000, 8]}, r"sides 1 to 1024"),
        ({"resize": "crop"}, r"resize must be one of fit, stretch, got 'crop'"),
        ({"test_fraction": 1.0}, r"test_fraction must be between 0 and 1, got 1.0"),
        ({"test_fraction": 0}, r"test_fraction"),
        ({"test_fraction": "0.2"}, r"test_fraction must be a number"),
        ({"seed": -1}, r"seed must be an integer >= 0"),
        ({"threads": 0}, r"threads must be an integer >= 1"),
    ],
)
def test_bad_options_are_named(options, match, tmp_path):
    class_tree(tmp_path / "t", {"a": 2, "b": 2})
    with pytest.raises(ValueError, match=match):
        folder.load(tmp_path / "t", **options)


# ----- real MNIST: 28x28 in, 28x28 out, lossless -----


def test_real_mnist_pngs_read_back_exactly(mnist, tmp_path):
    """3,000 real MNIST digits written as PNGs in train/<digit>/ and test/<digit>/ come
    back pixel for pixel, each in its class, whatever order the loader chose."""
    root = tmp_path / "mnist-pngs"
    train_x, train_y = mnist.train_images[:2500], mnist.train_labels[:2500]
    test_x, test_y = mnist.test_images[:500], mnist.test_labels[:500]
    for part, xs, ys in (("train", train_x, train_y), ("test", test_x, test_y)):
        for i, (x, y) in enumerate(zip(xs, ys)):
            save(root / part / f"digit-{y}" / f"{i:05}.png", Image.fromarray(x))
    ds = load(root, tmp_path / "data")
    assert ds.class_names == [f"digit-{d}" for d in range(10)]
    assert ds.input_shape == (1, 28, 28) and ds.warnings == ()
    for got_x, got_y, want_x, want_y in (
        (ds.train_images, ds.train_labels, train_x, train_y),
        (ds.test_images, ds.test_labels, test_x, test_y),
    ):
        assert len(got_x) == len(want_x)
        for digit in range(10):
            got = sorted(x.tobytes() for x in got_x[got_y == digit, 0])
            want = sorted(x.tobytes() for x in want_x[want_y == digit])
            assert got == want, digit


def test_default_threads_follow_the_file_size(monkeypatch):
    """Several threads only for large files, where decoding (without the GIL) dominates."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)

    class Scan:
        stats = [(300, 0)] * 5

    assert folder._threads(None, Scan) == 1
    Scan.stats = [(60_000, 0)] * 5
    assert folder._threads(None, Scan) == 2
    assert folder._threads(3, Scan) == 3


def test_linked_folders_are_followed_once(tmp_path):
    class_tree(tmp_path / "t", {"a": 3, "b": 2})
    class_tree(tmp_path / "elsewhere", {"more": 2})
    (tmp_path / "t" / "a" / "loop").symlink_to(tmp_path / "t" / "a")  # back up the tree
    (tmp_path / "t" / "b" / "more").symlink_to(tmp_path / "elsewhere" / "more")
    ds = load(tmp_path / "t", None, input_shape=[1, 8, 8], test_fraction=0.4)
    assert np.bincount(np.concatenate([ds.train_labels, ds.test_labels])).tolist() == [3, 4]
