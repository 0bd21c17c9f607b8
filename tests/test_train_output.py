"""What `numpycnn train` tells a new user: where the run and the model went, under -q too,
and that a second recipe's model never silently replaces the first's."""

from cli_helpers import TINY_NETWORK, fake_mnist, invoke, same_params, write_config


def recipe(path, seed=1):
    """A tiny config that leaves output.params to its default."""
    return write_config(
        path,
        network=TINY_NETWORK,
        data={"limit": 200, "validation": 0},
        training={"epochs": 1, "batch_size": 50, "seed": seed},
    )


def test_each_recipe_writes_its_own_model_file(tmp_path, monkeypatch, mnist_dir):
    fake_mnist(monkeypatch, mnist_dir, test_limit=100)
    monkeypatch.chdir(tmp_path)
    first, second = recipe(tmp_path / "first.yaml", 1), recipe(tmp_path / "second.yaml", 2)

    one = invoke("train", "-c", first, "-q")
    two = invoke("train", "-c", second, "-q")

    assert one.exit_code == two.exit_code == 0, (one.output, two.output)
    assert one.stdout.splitlines()[-1].endswith(
        "saved the model to first.pkl (run folder runs/first)"
    )
    assert two.stdout.splitlines()[-1].endswith(
        "saved the model to second.pkl (run folder runs/second)"
    )
    assert not same_params(tmp_path / "first.pkl", tmp_path / "second.pkl")
    assert not (tmp_path / "params.pkl").exists()


def test_a_second_run_of_a_recipe_keeps_the_first_model(tmp_path, monkeypatch, mnist_dir):
    """The default model file follows the run folder: runs/mine-2 saves mine-2.pkl, so the
    first run's mine.pkl is never replaced (nothing the user had is lost)."""
    fake_mnist(monkeypatch, mnist_dir, test_limit=100)
    monkeypatch.chdir(tmp_path)
    config = recipe(tmp_path / "mine.yaml")

    first = invoke("train", "-c", config, "-q")
    kept = (tmp_path / "mine.pkl").read_bytes()
    again = invoke("train", "-c", config, "-q")

    assert again.exit_code == 0, again.output
    assert "replacing" not in first.stdout + again.stdout
    assert again.stdout.splitlines()[-1].endswith(
        "saved the model to mine-2.pkl (run folder runs/mine-2)"
    )
    assert (tmp_path / "mine.pkl").read_bytes() == kept
    assert same_params(tmp_path / "mine-2.pkl", tmp_path / "runs" / "mine-2" / "last.pkl")
    assert "params: mine-2.pkl" in (tmp_path / "runs" / "mine-2" / "config.yaml").read_text()
    named = invoke("train", "-c", config, "--name", "other", "-q")  # --name names the file
    assert "saved the model to other.pkl (run folder runs/other)" in named.stdout


def test_replacing_a_named_model_file_is_said(tmp_path, monkeypatch, mnist_dir):
    fake_mnist(monkeypatch, mnist_dir, test_limit=100)
    monkeypatch.chdir(tmp_path)
    config = recipe(tmp_path / "mine.yaml")

    first = invoke("train", "-c", config, "-q", "--out", "model.pkl")
    again = invoke("train", "-c", config, "-q", "--out", "model.pkl")

    assert "replacing" not in first.stdout
    assert again.stdout.splitlines()[-1].endswith(
        "saved the model to model.pkl, replacing the previous one (run folder runs/mine-2)"
    )


def test_quiet_keeps_the_results_on_stdout(tmp_path, monkeypatch, mnist_dir):
    fake_mnist(monkeypatch, mnist_dir, test_limit=100)
    monkeypatch.chdir(tmp_path)

    result = invoke("train", "-c", recipe(tmp_path / "q.yaml"), "-q")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "run folder runs/q"  # named as soon as it exists, -q or not
    assert lines[-1].startswith("test accuracy ") and "q.pkl" in lines[-1]
    assert not any(line.startswith("training ") for line in lines)  # the chatter goes
    assert result.stderr == ""
