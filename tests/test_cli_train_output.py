"""--out on a file system that cannot take the model: a read-only one is refused before
training, and one that fills up during the run names the run's last.pkl, which holds the
trained model. Real file systems: a read-only and a 4 KB tmpfs, mounted in a private mount
namespace (``unshare``) around a real ``numpycnn train`` process."""

import shutil
import subprocess
import sys

import pytest
from cli_helpers import tiny_config

from numpycnn import data
from numpycnn.modelfile import load_model


def unshare_works():
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not unshare_works(), reason="needs `unshare -Urm` (user and mount namespaces) to mount"
)


def train_with_out_on(tmp_path, mnist_dir, mount_options):
    """Run ``numpycnn train --out MNT/model.pkl`` with a tmpfs of ``mount_options`` on MNT;
    returns (the process, the files left in MNT)."""
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    for name in data.MNIST_FILES:
        (tmp_path / "data" / "mnist" / name).symlink_to(mnist_dir / name)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    config = tiny_config(tmp_path, limit=200, batch_size=50)
    train = [
        sys.executable, "-m", "numpycnn.cli.main", "train", "-c", str(config), "-q",
        "--workers", "1", "--data-dir", str(tmp_path / "data"), "--out", str(mnt / "model.pkl"),
    ]  # fmt: skip
    script = (
        'mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; shift 2; "$@"; s=$?; '
        'echo "files left:"; ls -A "$M"; exit $s'
    )
    done = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", script, "sh", mount_options, str(mnt), *train],
        capture_output=True,
        text=True,
        timeout=300,
        env={"M": str(mnt), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"},
    )
    assert done.returncode != 99, done.stderr
    return done, done.stdout.split("files left:")[1].split()


def test_a_read_only_out_folder_is_refused_before_training(tmp_path, mnist_dir):
    done, left = train_with_out_on(tmp_path, mnist_dir, "ro")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: {tmp_path / 'mnt' / 'model.pkl'}: cannot save the model there: "
        "Read-only file system"
    ]
    assert not (tmp_path / "runs").exists()  # nothing trained, no run folder claimed


def test_an_out_folder_that_fills_up_names_the_runs_last_pkl(tmp_path, mnist_dir):
    """4 KB take the write check's byte but not the model: the run trains, then says where
    its model is."""
    done, left = train_with_out_on(tmp_path, mnist_dir, "size=4k")
    last = tmp_path / "runs" / "tiny" / "last.pkl"
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: {tmp_path / 'mnt' / 'model.pkl'}: cannot write: No space left on device; "
        f"this run's model is in {last}"
    ]
    assert left == []  # no partial model, no temporary file
    loaded = load_model(last)
    assert loaded.metrics["test_accuracy"] > 0.2 and loaded.checkpoint["epoch"] == 1
