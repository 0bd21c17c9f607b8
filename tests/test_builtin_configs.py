"""Built-in configs: installed with the package, found by name, listed by `numpycnn configs`;
and one set of defaults (an empty file, no file and configs/default.yaml are one recipe)."""

import json
from pathlib import Path

import pytest
import yaml
from cli_helpers import error_line, fake_mnist, invoke

import numpycnn
from numpycnn import recipes
from numpycnn.api import resolve_config
from numpycnn.config import (
    CONFIG_DIR,
    DEFAULT_RECIPE,
    EXTENSIONS,
    Config,
    ConfigError,
    builtin_configs,
    load_config,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.name for p in CONFIG_DIR.iterdir() if p.suffix in EXTENSIONS)


def test_the_configs_live_in_the_package_and_the_repository_links_to_them():
    assert CONFIG_DIR == ROOT / "numpycnn" / "configs"
    assert (ROOT / "configs").resolve() == CONFIG_DIR
    assert {"default.yaml", "best.yaml", "escontrela.yaml", "escontrela.ini"} <= set(SHIPPED)


def test_every_config_file_has_a_name():
    names = builtin_configs()
    assert sorted(p.name for p in names.values()) == SHIPPED
    assert names["best"].name == "best.yaml"
    assert names["escontrela"].name == "escontrela.yaml"  # the YAML file takes the stem,
    assert names["escontrela.ini"].name == "escontrela.ini"  # its INI twin its file name


def test_a_name_loads_the_built_in_config_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder, as a new user's
    assert load_config("best") == load_config(CONFIG_DIR / "best.yaml")
    assert load_config("best.yaml") == load_config(CONFIG_DIR / "best.yaml")
    assert load_config("escontrela.ini") == load_config("escontrela")
    resolved = resolve_config("best")
    assert (resolved.output.name, resolved.output.params) == ("best", "best.pkl")


def test_a_file_of_that_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("best.yaml").write_text("training:\n  epochs: 1\n")
    assert load_config("best.yaml").training.epochs == 1  # the file, not the built-in
    assert load_config("best").training.epochs == 20  # no file called "best": the built-in
    Path("default").mkdir()  # a folder is not a config file: the name still finds the recipe
    assert load_config("default") == load_config(CONFIG_DIR / "default.yaml")


def test_an_unknown_name_is_one_line_with_a_suggestion_and_the_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("bset")
    message = str(info.value)
    assert message.startswith("unknown config 'bset' (did you mean 'best'?): no such file")
    assert ", ".join(builtin_configs()) in message and "\n" not in message
    # a path is a path: no guessing at a file that is not there
    with pytest.raises(ConfigError, match=r"^configs/best\.yaml: no such file$"):
        load_config("configs/best.yaml")


def test_train_takes_a_name_on_the_command_line(tmp_path, monkeypatch, mnist_dir):
    fake_mnist(monkeypatch, mnist_dir, test_limit=100)
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "-c", "escontrela", "--epochs", 1, "--limit", 64, "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "run folder runs/escontrela"
    assert "saved the model to escontrela.pkl" in result.stdout
    assert (tmp_path / "escontrela.pkl").is_file()

    result = invoke("train", "-c", "bset")
    line = error_line(result)
    assert line.startswith("unknown config 'bset' (did you mean 'best'?)")
    assert not (tmp_path / "runs" / "bset").exists()


def test_configs_lists_one_line_each_from_the_files_own_headers():
    result = invoke("configs")
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "NETWORK", "PARAMETERS", "ACCURACY"]
    assert [line.split()[0] for line in lines] == list(builtin_configs())
    best = next(line for line in lines if line.startswith("best "))
    assert "conv8 5x5, conv8 5x5, maxpool2, dense128, dense10" in best
    assert "105,634" in best
    # the words come from the file's header, not from the code
    head = recipes.header(CONFIG_DIR / "best.yaml")
    assert head["about"] in best and head["accuracy"] in best
    for path in builtin_configs().values():
        assert set(recipes.header(path)) == {"about", "accuracy"}, path


def test_configs_json_lists_them_for_scripts():
    result = invoke("configs", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == list(builtin_configs())
    slides = next(r for r in rows if r["name"] == "slides-cnn")
    assert slides["parameters"] == 824_258 and slides["file"] == "slides-cnn.yaml"


@pytest.mark.parametrize("name", ["best", "escontrela.ini"])
def test_configs_name_prints_yaml_that_loads_as_the_same_config(tmp_path, name):
    result = invoke("configs", name)
    assert result.exit_code == 0, result.output
    mine = tmp_path / "mine.yaml"
    mine.write_text(result.stdout)
    assert yaml.safe_load(result.stdout)["network"]  # YAML, whatever the file's format
    assert load_config(mine) == load_config(builtin_configs()[name])
    if name == "best":  # a YAML file as written, comments and all
        assert result.stdout == (CONFIG_DIR / "best.yaml").read_text()


def test_configs_unknown_name_fails_in_one_line():
    line = error_line(invoke("configs", "defualt"))
    assert line.startswith("unknown config 'defualt' (did you mean 'default'?)")


def test_configs_of_a_file_says_it_is_a_file(tmp_path, monkeypatch):
    """`numpycnn configs a.yaml` of an existing file: true words, not "no such file"."""
    monkeypatch.chdir(tmp_path)
    Path("a.yaml").write_text("training:\n  epochs: 1\n")
    line = error_line(invoke("configs", "a.yaml"))
    assert line.startswith("a.yaml: a config file, not a built-in config")
    assert "no such file" not in line


# ----- one set of defaults -----


@pytest.mark.parametrize("text", ["", "# nothing\n", "training:\n", "output:\n  runs_dir: runs\n"])
def test_an_empty_config_is_no_config_is_default_yaml(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    Path("default.yaml").write_text(text)  # named as the recipe, so the run names agree
    empty = resolve_config("default.yaml")
    none = resolve_config(None)
    shipped = resolve_config(CONFIG_DIR / "default.yaml")
    assert empty == none == shipped
    assert load_config("default.yaml") == Config() == DEFAULT_RECIPE
    t = none.training
    assert (t.batch_size, t.optimizer.name, t.optimizer.hyperparameters["lr"]) == (
        64,
        "adam",
        0.003,
    )
    assert t.schedule.name == "onecycle" and none.data.validation == 5000


def test_the_readme_config_block_shows_the_defaults():
    """The README's Configuration block, read as a config, is the default recipe."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Configuration", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert Config.from_dict(yaml.safe_load(block), source="README") == DEFAULT_RECIPE


def test_the_python_api_takes_a_name(tmp_path, monkeypatch, mnist_dir):
    fake_mnist(monkeypatch, mnist_dir, test_limit=100)
    monkeypatch.chdir(tmp_path)
    result = numpycnn.train("murugan", epochs=1, limit=64)
    assert result.folder.path == Path("runs/murugan")
    assert result.params == Path("murugan.pkl") and result.params.is_file()
