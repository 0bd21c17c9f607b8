"""``predict DIR``: every entry of the directory that is not classified is reported on
stderr, one line each, in text and --json modes alike: subfolders, hidden entries, broken
links and special files, besides files that are not digit images."""

import os

from cli_helpers import digit_files, invoke, last_json, real_mnist


def test_every_skipped_entry_is_reported_once(tmp_path, mnist_dir, reference_params_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    (seven, *others), labels = digit_files(folder, real_mnist(mnist_dir), 3)
    (folder / "sub").mkdir()
    (folder / ".cache").mkdir()
    (folder / ".hidden.png").write_bytes(seven.read_bytes())
    (folder / "gone.png").symlink_to(folder / "deleted.png")
    (folder / "alias.png").symlink_to(seven)  # a link to a digit is a digit
    (folder / "elsewhere").symlink_to(tmp_path)  # a link to a folder is a folder
    os.mkfifo(folder / "pipe.png")  # never opened: reading it would block
    expected = [
        f"Warning: skipped {folder / '.cache'}/: a hidden folder",
        f"Warning: skipped {folder / '.hidden.png'}: a hidden file",
        f"Warning: skipped {folder / 'elsewhere'}/: a folder (folders in a folder are not "
        "searched)",
        f"Warning: skipped {folder / 'gone.png'}: a broken link (to {folder / 'deleted.png'})",
        f"Warning: skipped {folder / 'pipe.png'}: not a regular file",
        f"Warning: skipped {folder / 'sub'}/: a folder (folders in a folder are not searched)",
    ]
    classified = sorted([folder / "alias.png", seven, *others])

    text = invoke("predict", "--params", reference_params_path, folder)
    as_json = invoke("predict", "--params", reference_params_path, "--json", folder)

    assert text.exit_code == 0 and as_json.exit_code == 0, (text.output, as_json.output)
    assert text.stderr.splitlines() == expected
    assert as_json.stderr.splitlines() == expected
    assert [line.split(":")[0] for line in text.stdout.splitlines()] == list(map(str, classified))
    results = last_json(as_json)
    assert [r["file"] for r in results] == list(map(str, classified))
    by_file = {r["file"]: r["digit"] for r in results}
    assert by_file[str(folder / "alias.png")] == by_file[str(seven)] == labels[0]


def test_a_directory_of_only_skipped_entries_is_an_error(tmp_path, reference_params_path):
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "sub").mkdir()
    (folder / "dangling.png").symlink_to(folder / "missing.png")

    result = invoke("predict", "--params", reference_params_path, folder)

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Warning: skipped {folder / 'dangling.png'}: a broken link (to {folder / 'missing.png'})",
        f"Warning: skipped {folder / 'sub'}/: a folder (folders in a folder are not searched)",
        f"Error: {folder}: no digit images in this directory",
    ]
