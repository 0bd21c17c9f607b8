"""The library side of reading the user's image files: ``imageprep.list_images`` (what a
directory holds for ``predict``, with why each other entry is skipped) and
``imageprep.open_image`` (one translation of every open or decode failure into an
``ImageError`` naming the file, for ``load_digit`` and the folder source alike)."""

import os

import numpy as np
import pytest
from PIL import Image

from numpycnn.datasets.images import load_image
from numpycnn.imageprep import ImageError, list_images, load_digit, open_image


def png(path, value=200):
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)
    return path


def test_list_images_keeps_regular_files_and_says_why_it_skips_the_rest(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    two, one = png(folder / "b.png"), png(folder / "a.png")
    notes = folder / "notes.txt"
    notes.write_text("not an image, but a regular file: load_digit decides")
    (folder / "sub").mkdir()
    png(folder / ".hidden.png")
    (folder / "gone.png").symlink_to(folder / "deleted.png")
    (folder / "alias.png").symlink_to(one)
    os.mkfifo(folder / "pipe.png")

    paths, skipped = list_images(folder)

    assert paths == [folder / "a.png", folder / "alias.png", two, notes]
    assert skipped == [
        (folder / ".hidden.png", "a hidden file"),
        (folder / "gone.png", f"a broken link (to {folder / 'deleted.png'})"),
        (folder / "pipe.png", "not a regular file"),
        (folder / "sub", "a folder (folders in a folder are not searched)"),
    ]


def test_list_images_of_a_missing_directory_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nowhere")


@pytest.mark.parametrize("load", [load_digit, lambda p: load_image(p, (1, 8, 8))])
def test_a_directory_is_named_as_one_by_both_readers(tmp_path, load):
    folder = tmp_path / "x.png"
    folder.mkdir()
    with pytest.raises(ImageError) as err:
        load(folder)
    assert str(err.value) == f"{folder}: is a directory, not an image file"


def test_open_image_names_the_file_for_failures_in_its_block(tmp_path):
    path = png(tmp_path / "a.png")
    with pytest.raises(ImageError) as err:
        with open_image(path, "upload.png"):
            raise ValueError("conversion from LAB to L not supported")  # as Pillow says it
    assert str(err.value) == (
        "upload.png: corrupted or truncated image (conversion from LAB to L not supported)"
    )
    mine = ImageError("upload.png: mine")
    with pytest.raises(ImageError) as err:
        with open_image(path, "upload.png"):
            raise mine
    assert err.value is mine
