"""Configuration files: the schema, its defaults, both formats, and one-line errors."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from numpycnn.config import (
    DEFAULT_RECIPE,
    AugmentConfig,
    Config,
    ConfigError,
    ScheduleConfig,
    load_config,
)
from numpycnn.engine import Sequential, optim, reference_network
from numpycnn.schedules import OneCycle

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path):
    """The ConfigError message of loading ``path``, checked to be one line naming the file."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message


# ----- the shipped configs -----


def test_escontrela_yaml_and_ini_are_the_same_configuration():
    assert load_config(CONFIGS / "escontrela.yaml") == load_config(CONFIGS / "escontrela.ini")


def test_escontrela_config_is_the_reference_recipe():
    config = load_config(CONFIGS / "escontrela.yaml")
    assert list(config.network) == reference_network().specs()
    assert (config.data.limit, config.data.validation) == (50_000, 0)
    assert config.data.normalization == "reference"
    t = config.training
    assert (t.epochs, t.batch_size, t.init, t.loss) == (2, 32, "reference", "softmax_cross_entropy")
    assert t.optimizer.name == "escontrela"
    assert t.optimizer.hyperparameters == {"lr": 0.01, "beta1": 0.95, "beta2": 0.99, "eps": 1e-7}


def test_default_config_trains_the_reference_network_with_adam():
    config = load_config(CONFIGS / "default.yaml")
    model = Sequential(config.network, init=config.training.init, dtype=config.training.dtype)
    assert model.num_params == 105_634
    assert list(config.network) == reference_network().specs()
    assert (config.data.normalization, config.data.validation) == ("standard", 5000)
    assert config.data.limit is None
    assert config.training.init == "he_normal"
    assert config.training.optimizer.to_dict()["name"] == "adam"
    assert config.training.optimizer.hyperparameters["lr"] == 0.003
    assert config.training.schedule.name == "onecycle" and config.training.lr_decay == 1
    assert config.data.augment is None


def test_best_config_is_the_reference_network_with_augmentation_and_a_schedule():
    best, default = load_config(CONFIGS / "best.yaml"), load_config(CONFIGS / "default.yaml")
    assert list(best.network) == reference_network().specs()  # same layers, nothing added
    assert Sequential(best.network).num_params == 105_634
    assert best.data.augment == AugmentConfig(shift=2, rotate=10, scale=0.1)
    assert best.training.schedule == default.training.schedule
    assert best.data.validation == 5000  # chosen by validation accuracy, not the test set


def test_the_default_recipe_is_configs_default_yaml():
    assert load_config(CONFIGS / "default.yaml") == DEFAULT_RECIPE


def test_naming_the_default_optimizer_keeps_the_default_settings(tmp_path):
    # {name: adam} means what no optimizer section means; another optimiser takes its own
    config = load_config(write(tmp_path, "training:\n  optimizer: {name: adam}\n"))
    assert config.training.lr_decay == 1.0
    assert config.training.optimizer == DEFAULT_RECIPE.training.optimizer
    sgd = load_config(write(tmp_path, "training:\n  optimizer: {name: momentum, lr: 0.1}\n"))
    assert sgd.training.optimizer.hyperparameters == optim.Momentum(lr=0.1).hyperparameters()


# ----- defaults and partial files -----


@pytest.mark.parametrize("text", ["", "# nothing\n", "data:\ntraining:\n"])
def test_an_empty_config_gives_the_defaults(tmp_path, text):
    config = load_config(write(tmp_path, text))
    assert config == Config()
    assert list(config.network) == reference_network().specs()
    assert config.data.data_dir == "data" and config.data.mirrors == ()
    assert config.data.limit is None and config.data.validation == 5000
    assert config.training.loss == "softmax_cross_entropy"
    assert (config.output.params, config.output.runs_dir) == (None, "runs")  # NAME.pkl
    assert config.output.name is None and config.output.save_epochs is False
    assert config.data.augment is None
    assert config.training.schedule == ScheduleConfig("onecycle", OneCycle().settings())


def test_a_config_gives_only_what_it_changes(tmp_path):
    config = load_config(write(tmp_path, "training:\n  epochs: 7\n  optimizer: {lr: 0.5}\n"))
    assert config.training.epochs == 7
    assert config.training.optimizer.name == "adam"
    assert config.training.optimizer.hyperparameters["lr"] == 0.5
    assert config.training.optimizer.hyperparameters["beta2"] == 0.999
    assert dataclasses.replace(config, training=Config().training) == Config()


def test_layer_aliases_and_omitted_layer_defaults_are_written_out(tmp_path):
    text = """
network:
  - {type: conv, filters: 4, kernel: 3}
  - {type: maxpool}
  - {type: flatten}
  - {type: fc, units: 10, init: glorot_uniform}
"""
    network = load_config(write(tmp_path, text)).network
    assert network == (
        {"type": "conv2d", "filters": 4, "kernel": 3, "stride": 1, "padding": 0},
        {"type": "maxpool2d", "size": 2, "stride": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 10, "init": "glorot_uniform"},
    )


def test_yaml_reads_exponents_without_a_dot_as_floats(tmp_path):
    text = "training:\n  optimizer: {name: adam, eps: 1e-7, lr: 2E-3}\n"
    hyper = load_config(write(tmp_path, text)).training.optimizer.hyperparameters
    assert (hyper["eps"], hyper["lr"]) == (1e-7, 2e-3)


def test_integers_are_accepted_where_floats_are_expected(tmp_path):
    text = "training:\n  optimizer: {name: sgd, lr: 1}\n"
    hyper = load_config(write(tmp_path, text)).training.optimizer.hyperparameters
    assert hyper == {"lr": 1.0} and isinstance(hyper["lr"], float)


def test_ini_values_are_parsed_to_the_schema_types(tmp_path):
    text = """
[data]
data_dir = 2024
mirrors = https://a.example/mnist/, https://b.example/
limit = none
validation = 100   ; a comment

[layer.1]
type = flatten

[layer.2]
type = dense
units = 10
"""
    config = load_config(write(tmp_path, text, "c.ini"))
    assert config.data.data_dir == "2024"
    assert config.data.mirrors == ("https://a.example/mnist/", "https://b.example/")
    assert config.data.limit is None and config.data.validation == 100
    assert config.network == ({"type": "flatten"}, {"type": "dense", "units": 10})


# ----- plain data, overrides, immutability -----


def test_to_dict_round_trips_through_from_dict_and_a_yaml_file(tmp_path):
    config = load_config(CONFIGS / "escontrela.ini")
    data = config.to_dict()
    assert Config.from_dict(data) == config
    path = write(tmp_path, yaml.safe_dump(data))
    assert load_config(path) == config
    data["network"][0]["filters"] = 99  # plain copies: the config is unaffected
    assert config.network[0]["filters"] == 8


def test_with_overrides_returns_a_new_validated_config():
    config = load_config(CONFIGS / "escontrela.yaml")
    changed = config.with_overrides(
        epochs=1, batch_size=64, lr=0.1, seed=5, limit=1000, params="p.pkl", mirrors=["m"]
    )
    assert (changed.training.epochs, changed.training.batch_size, changed.training.seed) == (
        1,
        64,
        5,
    )
    assert changed.training.optimizer.hyperparameters["lr"] == 0.1
    assert changed.training.optimizer.hyperparameters["beta1"] == 0.95
    assert (changed.data.limit, changed.data.mirrors, changed.output.params) == (
        1000,
        ("m",),
        "p.pkl",
    )
    assert changed.data.data_dir == config.data.data_dir
    assert config.training.epochs == 2  # the original is unchanged
    assert config.with_overrides() == config


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"epochs": 0}, "training.epochs: expected an integer >= 1, got 0"),
        ({"lr": -1}, "lr must be > 0"),
        ({"limit": 70_000}, "data.limit: expected an integer from 1 to 60000 or null"),
        ({"batch_size": True}, "training.batch_size"),
    ],
)
def test_bad_overrides_are_config_errors(overrides, fragment):
    with pytest.raises(ConfigError, match="^overrides: ") as info:
        Config().with_overrides(**overrides)
    assert fragment in str(info.value)


def test_configs_are_frozen():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.training.epochs = 3


# ----- errors -----


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("training:\n  epoch: 3\n", ["unknown key 'training.epoch'", "did you mean 'epochs'?"]),
        ("trainig: {}\n", ["unknown section 'trainig'", "did you mean 'training'?"]),
        ("data:\n  normalisation: unit\n", ["'data.normalisation'", "'normalization'"]),
        ("training:\n  epochs: true\n", ["training.epochs: expected an integer >= 1, got True"]),
        ("training:\n  epochs: '2'\n", ["training.epochs: expected an integer"]),
        ("training:\n  batch_size: 0\n", ["training.batch_size: expected an integer >= 1"]),
        ("training:\n  seed: 1.5\n", ["training.seed: expected an integer >= 0"]),
        ("data:\n  limit: 0\n", ["data.limit: expected an integer from 1 to 60000 or null"]),
        ("data:\n  validation: -1\n", ["data.validation: expected an integer from 0"]),
        ("data: {limit: 55001, validation: 5000}\n", ["data: limit 55001 plus validation 5000"]),
        ("data:\n  mirrors: http://x/\n", ["data.mirrors: expected a list of strings"]),
        ("data:\n  data_dir: 3\n", ["data.data_dir: expected a non-empty string"]),
        ("data:\n  normalization: standrd\n", ["data.normalization", "did you mean 'standard'?"]),
        ("training:\n  dtype: float16\n", ["training.dtype: expected one of float32, float64"]),
        ("training:\n  loss: cross_entropy\n", ["training.loss", "softmax_cross_entropy"]),
        ("training:\n  init: he\n", ["training.init", "he_normal"]),
        ("training:\n  optimizer: {name: adamw}\n", ["optimizer.name", "did you mean 'adam'?"]),
        ("training:\n  optimizer: {name: adam, momentum: 0.9}\n", ["'training.optimizer."]),
        ("training:\n  optimizer: {name: adam, beta: 0.9}\n", ["(did you mean 'beta"]),
        ("training:\n  optimizer: {name: adam, beta1: 1.5}\n", ["beta1 must be in [0, 1)"]),
        ("training:\n  optimizer: {name: adam, lr: true}\n", ["optimizer.lr: expected a number"]),
        ("training:\n  optimizer: {lr: .nan}\n", ["training.optimizer.lr: expected a number"]),
        ("training:\n  optimizer: {name: sgd}\n", ["optimizer sgd needs 'lr'"]),
        ("training:\n  optimizer: adam\n", ["training.optimizer: expected a mapping"]),
        ("output: []\n", ["output: expected a mapping"]),
        ("- 1\n- 2\n", ["expected a mapping of sections"]),
    ],
)
def test_yaml_schema_errors_name_the_key(tmp_path, text, fragments):
    message = error_of(write(tmp_path, text))
    for fragment in fragments:
        assert fragment in message


def network_yaml(*layers):
    return "network:\n" + "".join(f"  - {layer}\n" for layer in layers)


@pytest.mark.parametrize(
    "layers, fragments",
    [
        (["{type: conv2, filters: 8, kernel: 5}"], ["network[0].type", "did you mean 'conv2d'?"]),
        (["{type: relu}", "{type: conv2d, filter: 8, kernel: 5}"], ["'network[1].filter'"]),
        (["{type: conv2d, filter: 8, kernel: 5}"], ["did you mean 'filters'?"]),
        (["{type: conv2d, filters: 0, kernel: 5}"], ["network[0] (conv2d): filters must be"]),
        (["{type: conv2d, filters: 8}"], ["network[0]: conv2d needs 'kernel'"]),
        (["{type: conv2d, filters: 8, kernel: 30}"], ["network[0] (conv2d)", "does not fit"]),
        (["{type: dense, units: 10}"], ["network[0] (dense)", "add a flatten layer"]),
        (["{type: flatten}", "{type: dense, units: 5}"], ["gives shape (5,)", "10 class"]),
        (["{type: flatten}", "{type: dense, units: 10, init: he}"], ["network[1].init"]),
        (["{type: relu, alpha: 0.1}"], ["'network[0].alpha'"]),
        (["{filters: 8}"], ["network[0]: missing key 'type'"]),
        (["relu"], ["network[0]: expected a mapping"]),
    ],
)
def test_network_errors_name_the_layer(tmp_path, layers, fragments):
    message = error_of(write(tmp_path, network_yaml(*layers)))
    for fragment in fragments:
        assert fragment in message


def test_an_empty_network_is_an_error(tmp_path):
    assert "network: expected a non-empty list" in error_of(write(tmp_path, "network: []\n"))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("training:\n  epochs: [1\n", "line 3, column 1"),
        ("training:\n\tepochs: 1\n", "line 2"),
        ("training:\n  epochs: 1\n  epochs: 2\n", "line 3, column 3: duplicate key 'epochs'"),
    ],
)
def test_unparsable_yaml_names_the_line(tmp_path, text, fragment):
    assert fragment in error_of(write(tmp_path, text))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("epochs = 2\n", "line 1: 'epochs' belongs under [training]"),
        ("lr = 0.1\n", "line 1: 'lr' belongs under [optimizer]"),
        ("whatever = 2\n", "line 1: a key before the first [section]"),
        ("[training]\nepochs = 2\nepochs = 3\n", "line 3: duplicate key 'epochs' in [training]"),
        ("[training]\n[data]\n[training]\n", "line 3: duplicate section [training]"),
        ("[training]\nepochs 2\n", "line 2: cannot parse"),
        ("[training]\nepoch = 2\n", "unknown key 'training.epoch' (did you mean 'epochs'?)"),
        ("[trainng]\n", "unknown section [trainng] (did you mean 'training'?)"),
        ("[layers.1]\ntype = relu\n", "did you mean 'layer.N'?"),
        ("[optimizer]\nname = adam\nbeta = 0.9\n", "unknown key 'optimizer.beta'"),
        ("[optimizer]\nlr = fast\n", "optimizer.lr: expected a number, got 'fast'"),
        ("[data]\nlimit = 1.5\n", "data.limit: expected an integer"),
        ("[layer.1]\ntype = flatten\n[layer.3]\ntype = dense\nunits = 10\n", "numbered 1, 2"),
        ("[layer.1]\ntype = flatten\n[layer.2]\ntype = dense\nunit = 10\n", "'layer.2.unit'"),
        ("[DEFAULT]\nseed = 1\n", "[DEFAULT]"),
    ],
)
def test_ini_errors_name_the_line_or_key(tmp_path, text, fragment):
    assert fragment in error_of(write(tmp_path, text, "c.ini"))


def test_missing_file_unknown_extension_and_bad_encoding(tmp_path):
    assert "no such file" in error_of(tmp_path / "absent.yaml")
    assert "unknown config format '.json'" in error_of(write(tmp_path, "{}", "c.json"))
    assert "no extension" in error_of(write(tmp_path, "{}", "config"))
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(b"data:\n  data_dir: caf\xe9\n")
    assert "not UTF-8" in error_of(bad)


def test_limit_and_validation_may_use_every_training_image(tmp_path):
    data = load_config(write(tmp_path, "data: {limit: 55000, validation: 5000}\n")).data
    assert (data.limit, data.validation) == (55_000, 5_000)


# ----- keys written at the top level, augmentation, schedules, run folders -----


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: 2\n", "'epochs' belongs under 'training:'"),
        ("batch_size: 8\nepochs: 2\n", "'batch_size' belongs under 'training:'"),
        ("lr: 0.1\n", "'lr' belongs under 'training.optimizer:'"),
        ("limit: 100\n", "'limit' belongs under 'data:'"),
        ("augment: {shift: 2}\n", "'augment' belongs under 'data:'"),
        ("rotate: 5\n", "'rotate' belongs under 'data.augment:'"),
        ("schedule: {name: cosine}\n", "'schedule' belongs under 'training:'"),
        ("params: x.pkl\n", "'params' belongs under 'output:'"),
        ("epoch: 2\n", "unknown section 'epoch' (did you mean 'epochs', under 'training:'?)"),
        ("trainig: {}\n", "unknown section 'trainig' (did you mean 'training'?)"),
    ],
)
def test_a_flat_file_says_where_each_key_belongs(tmp_path, text, message):
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path}: {message}")


def test_augment_and_schedule_sections_in_yaml_and_ini_agree(tmp_path):
    yaml_config = load_config(
        write(
            tmp_path,
            "data:\n  augment: {shift: 2, rotate: 10}\n"
            "training:\n  schedule: {name: onecycle, pct_start: 0.25}\n",
        )
    )
    ini_config = load_config(
        write(
            tmp_path,
            "[augment]\nshift = 2\nrotate = 10\n[schedule]\nname = onecycle\npct_start = 0.25\n",
            "c.ini",
        )
    )
    assert yaml_config == ini_config
    assert yaml_config.data.augment == AugmentConfig(shift=2.0, rotate=10.0, scale=0.0)
    assert yaml_config.training.schedule == ScheduleConfig(
        "onecycle", {"pct_start": 0.25, "div_factor": 25.0, "final_div_factor": 1e4}
    )
    assert Config.from_dict(yaml_config.to_dict()) == yaml_config
    assert yaml_config.training.make_schedule().spec() == {
        "name": "onecycle", "pct_start": 0.25, "div_factor": 25.0, "final_div_factor": 1e4,
    }  # fmt: skip


def test_the_exponential_schedule_takes_lr_decay(tmp_path):
    text = "training:\n  lr_decay: 0.5\n  schedule: {name: exponential}\n"
    config = load_config(write(tmp_path, text))
    schedule = config.training.make_schedule()
    assert [schedule.lr(step, 1.0, 10, 100) for step in (0, 9, 10, 25)] == [1, 1, 0.5, 0.25]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("data:\n  augment: {shift: 20}\n", "data.augment.shift: expected a number in [0, 14]"),
        ("data:\n  augment: {rotate: -1}\n", "data.augment.rotate: expected a number in [0, 180]"),
        ("data:\n  augment: {scale: 1}\n", "data.augment.scale: expected a number in [0, 1)"),
        ("data:\n  augment: {shfit: 2}\n", "unknown key 'data.augment.shfit' (did you mean "
         "'shift'?)"),
        ("data:\n  augment: 2\n", "data.augment: expected a mapping of keys, got 2"),
        ("training:\n  schedule: {name: cosin}\n", "training.schedule.name: expected one of"),
        ("training:\n  schedule: {name: cosine, warmup: 1}\n", "warmup must be in [0, 1)"),
        ("training:\n  schedule: {name: cosine, pct_start: 0.3}\n", "unknown key "
         "'training.schedule.pct_start' for cosine"),
        ("training:\n  schedule: {name: exponential, decay: 0.5}\n",
         "decay is 'training.lr_decay'"),
        ("training:\n  lr_decay: 0.5\n  schedule: {name: onecycle}\n",
         "applies to the exponential schedule only"),
        ("training:\n  lr_decay: 0.5\n", "training.lr_decay 0.5 applies to the exponential "
         "schedule only, not to onecycle: set training.schedule to {name: exponential}"),
        ("training:\n  schedule: {name: onecycle, div_factor: 0.5}\n", "div_factor must be >= 1"),
        ("output:\n  checkpoint_dir: ck\n", "'output.checkpoint_dir' is no longer used"),
        ("output:\n  name: a/b\n", "output.name: expected a plain folder name"),
        ("output:\n  save_epochs: 1\n", "output.save_epochs: expected true or false, got 1"),
    ],
)  # fmt: skip
def test_augment_schedule_and_output_errors_name_the_key(tmp_path, text, fragment):
    assert fragment in error_of(write(tmp_path, text))


def test_configs_stored_before_run_folders_still_load():
    stored = Config().to_dict()
    del stored["output"]["runs_dir"], stored["output"]["name"], stored["output"]["save_epochs"]
    del stored["data"]["augment"], stored["training"]["schedule"]
    stored["output"]["checkpoint_dir"] = "checkpoints"  # as model files of 0.1.0 hold it
    # stored before schedules existed: it keeps the exponential schedule it trained with
    exponential = dataclasses.replace(Config().training, schedule=ScheduleConfig("exponential"))
    assert Config.from_dict(stored) == dataclasses.replace(Config(), training=exponential)


def test_ini_reads_booleans_and_texts_that_look_like_numbers(tmp_path):
    output = load_config(
        write(tmp_path, "[output]\nsave_epochs = yes\nname = 2024\n", "c.ini")
    ).output
    assert output.save_epochs is True and output.name == "2024"
    output = load_config(
        write(tmp_path, "[output]\nsave_epochs = off\nname = null\n", "c.ini")
    ).output
    assert output.save_epochs is False and output.name is None
