"""``numpycnn download`` and the shared CLI options, with local mirrors (no network)."""

import io

import pytest
from click.testing import CliRunner

from numpycnn import data
from numpycnn.cli import options
from numpycnn.cli.main import main


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


def run(*args):
    return CliRunner().invoke(main, ["download", *args])


def test_download_prints_the_verified_paths(tmp_path, mnist_dir):
    result = run("--data-dir", str(tmp_path), "--mirror", str(mnist_dir))

    assert result.exit_code == 0, result.output
    expected = [tmp_path / "mnist" / name for name in data.MNIST_FILES]
    assert result.stdout.splitlines() == [str(path) for path in expected]
    assert all(path.read_bytes() == (mnist_dir / path.name).read_bytes() for path in expected)
    # no progress bar when stderr is not a terminal: one line per file fetched, as pip does
    assert result.stderr.splitlines() == [
        f"downloading {path.name} ({options.human_size((mnist_dir / path.name).stat().st_size)})"
        for path in expected
    ]


def test_environment_supplies_mirrors_and_data_dir(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setenv(data.MIRROR_ENV, f"{tmp_path / 'empty'} {mnist_dir.as_uri()}")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env-data"))

    result = run("--quiet")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == str(tmp_path / "env-data" / "mnist" / data.TRAIN_IMAGES)


def test_every_mirror_failing_is_one_error_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    gone = (tmp_path / "gone").as_uri()

    result = run("--data-dir", str(tmp_path / "cache"), "--mirror", str(empty), "--mirror", gone)

    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: could not fetch {data.TRAIN_IMAGES} from any mirror: ")
    assert f"{empty} ({empty / data.TRAIN_IMAGES} not found)" in line
    assert f"{gone} (" in line
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


def test_unsupported_mirror_scheme(tmp_path):
    result = run("--data-dir", str(tmp_path), "--mirror", "gopher://old.example/")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: mirror 'gopher://old.example/': unsupported URL scheme 'gopher'"
        " (use http, https, file or a directory path)"
    )


def test_unusable_data_dir_is_an_error_not_a_traceback(tmp_path, mnist_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    result = run("--data-dir", str(blocker / "data"), "--mirror", str(mnist_dir))

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith("Error: ") and str(blocker) in result.stderr


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(
    ("quiet", "tty", "shown"), [(False, True, True), (True, True, False), (False, False, True)]
)
def test_progress_shown_only_on_a_terminal_without_quiet(monkeypatch, quiet, tty, shown):
    """A bar on a terminal; one line per file elsewhere (a log, a pipe); nothing with -q."""
    stderr = FakeTerminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)

    bar = options.download_progress(quiet)(desc="file.gz", total=2048)
    bar.update(2048)
    bar.close()

    assert ("file.gz" in stderr.getvalue()) is shown
    if shown and tty:
        assert "2.00k/2.00k" in stderr.getvalue()
    elif shown:
        assert stderr.getvalue() == "downloading file.gz (2.0 kB)\n"
