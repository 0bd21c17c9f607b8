"""Configuration: YAML or INI files with one schema, read once into frozen dataclasses.

A config has four sections, each optional. Every omitted key takes its default, and the
defaults are our recommended recipe, configs/default.yaml (``DEFAULT_RECIPE``): an empty file
trains what no file trains. ``load_config`` also takes the name of a built-in config
(``best``, ``default``, ...: the files in ``numpycnn/configs/``) where no file of that name
exists.

- ``network``: a list of layer specs for the engine, e.g. ``{type: conv2d, filters: 8, kernel:
  5}``; the reference network by default.
- ``data``: dataset (mnist, fashion-mnist, kmnist, cifar10 or folder, with a folder's path,
  input_shape, test_fraction and resize), data_dir, mirrors, limit, validation,
  normalization, and ``augment``: null or a mapping of shift (pixels, at most half the
  image's side), rotate (degrees), scale (fraction) and flip (true or a probability) for
  random changes of the training images. The network is checked on the data's input
  shape, and its last layer against the data's class count (a folder's class folders are
  counted without reading an image).
- ``training``: epochs, batch_size, loss, init, dtype, seed, lr_decay (per-epoch factor of
  the learning rate), ``optimizer``, a mapping with ``name`` and that optimiser's
  hyperparameters, and ``schedule``, a mapping with ``name`` (exponential, cosine, onecycle)
  and its settings.
- ``output``: params (the final model file), runs_dir and name (the run folder
  ``runs_dir/name[-N]``), save_epochs (a checkpoint file per epoch besides last and best),
  snapshots (copies of the parameters at about 44 steps, to replay the run).

In INI files the sections are ``[data]``, ``[augment]``, ``[training]``, ``[optimizer]``,
``[schedule]`` and ``[output]``, and the network is the numbered sections ``[layer.1]``,
``[layer.2]``, ...; values are read as integers, floats or null/none where they parse so, and
``mirrors`` is a comma-separated list.

Everything is checked here, so that the rest of the program takes plain, valid values; every
problem is a ``ConfigError`` whose one-line message starts with the file name and names the
key at fault.
"""

import configparser
import dataclasses
import difflib
import inspect
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import schedules
from .engine import init as initialisers
from .engine import losses, optim
from .engine.model import (
    ALIASES,
    DTYPES,
    LAYERS,
    MNIST_SHAPE,
    REFERENCE_LAYERS,
    Sequential,
    build_layer,
    infer_shapes,
)

NORMALIZATIONS = ("reference", "standard", "unit")
MNIST_TRAIN_IMAGES = 60_000
MNIST_CLASSES = 10
#: The fixed data sets' training images, input shape and class count (a folder's are known
#: only from the folder: ``datasets.folder``).
FIXED_SETS = {
    "mnist": (MNIST_TRAIN_IMAGES, MNIST_SHAPE, MNIST_CLASSES),
    "fashion-mnist": (60_000, (1, 28, 28), 10),
    "kmnist": (60_000, (1, 28, 28), 10),
    "cifar10": (50_000, (3, 32, 32), 10),
}
FOLDER = "folder"
FOLDER_DEFAULTS = {"input_shape": (1, 28, 28), "test_fraction": 0.2, "resize": "fit"}
RESIZES = ("fit", "stretch")
#: ``augment.flip: true`` flips each training image left to right with this probability.
FLIP_TRUE = 0.5
SECTIONS = ("network", "data", "training", "output")
EXTENSIONS = (".yaml", ".yml", ".ini")


class ConfigError(ValueError):
    """A configuration file that cannot be read or does not fit the schema."""


class _Problem(Exception):
    """A problem found while checking; ``ConfigError`` adds the file name in one place."""


@dataclass(frozen=True)
class AugmentConfig:
    """Random moves of each training image: translation up to ``shift`` pixels each way,
    rotation up to ``rotate`` degrees, scaling by up to ``scale`` (a fraction) either way."""

    shift: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    flip: float = 0.0  # probability of a left-right mirror image (``flip: true`` is 0.5)


@dataclass(frozen=True)
class DataConfig:
    """Which data set to train on, where it comes from and how much of it to use.

    ``dataset``: a name of ``numpycnn.datasets`` (mnist, fashion-mnist, kmnist, cifar10,
    folder); ``path``, ``input_shape`` [C, H, W], ``test_fraction`` and ``resize`` (fit or
    stretch) describe a folder and are refused for the fixed sets (``input_shape`` is
    accepted there when it is the set's own). ``limit``: train on the first N training
    images (None: all not held out); ``validation``: validate on the next N, never trained
    on (limit + validation may not exceed the set's training images); ``mirrors``: download
    URLs of the chosen set (empty: its defaults); ``augment``: None, or the random moves
    applied to the training images (never to validation or test).
    """

    data_dir: str = "data"
    mirrors: tuple[str, ...] = ()
    limit: int | None = None
    validation: int = 5000
    normalization: str = "standard"
    augment: AugmentConfig | None = None
    dataset: str = "mnist"
    path: str | None = None
    input_shape: tuple[int, ...] | None = None  # None: the set's own (a folder's: 1x28x28)
    test_fraction: float = 0.2
    resize: str = "fit"

    @property
    def shape(self):
        """The (C, H, W) of one image of this data (for a folder, as decoded)."""
        if self.input_shape is not None:
            return tuple(self.input_shape)
        if self.dataset == FOLDER:
            return FOLDER_DEFAULTS["input_shape"]
        return FIXED_SETS[self.dataset][1]

    def source(self, seed=0):
        """The source description ``numpycnn.datasets.load`` takes: the set's name, or for
        a folder its path, shape, split (``seed``: the run's, recorded) and resize."""
        if self.dataset != FOLDER:
            return self.dataset
        return {
            "dataset": FOLDER,
            "path": self.path,
            "input_shape": list(self.shape),
            "test_fraction": self.test_fraction,
            "resize": self.resize,
            "seed": int(seed),
        }


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimiser name and every hyperparameter its constructor takes, defaults filled in."""

    name: str = "adam"
    hyperparameters: dict = field(default_factory=lambda: optim.Adam(lr=0.003).hyperparameters())

    def to_dict(self):
        return {"name": self.name, **self.hyperparameters}


@dataclass(frozen=True)
class ScheduleConfig:
    """A learning-rate schedule's name and its settings (``numpycnn.schedules``). The
    exponential schedule's decay is ``training.lr_decay``, so it has no settings here."""

    name: str = "onecycle"
    settings: dict | None = None  # None: the named schedule's own defaults

    def __post_init__(self):
        if self.settings is None:
            own = {} if self.name == "exponential" else schedules.get(self.name).settings()
            object.__setattr__(self, "settings", own)

    def to_dict(self):
        return {"name": self.name, **self.settings}


@dataclass(frozen=True)
class TrainingConfig:
    """How to train: the loss, initialiser, dtype, seed, and the optimiser with its settings."""

    epochs: int = 4
    batch_size: int = 64
    loss: str = "softmax_cross_entropy"
    init: str = "he_normal"
    dtype: str = "float32"
    seed: int = 0
    lr_decay: float = 1.0  # the learning rate of epoch k (from 0) is lr * lr_decay**k
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def make_schedule(self):
        """The ``numpycnn.schedules`` object this config describes."""
        if self.schedule.name == "exponential":
            return schedules.Exponential(self.lr_decay)
        return schedules.get(self.schedule.name, **self.schedule.settings)


@dataclass(frozen=True)
class OutputConfig:
    """Where the trained model file goes, and the run folder of checkpoints and results.

    Each run gets its own folder ``runs_dir/name`` (``name-2``, ``name-3``, ... when taken);
    ``name`` defaults to the config file's name. ``params`` defaults to ``NAME.pkl`` after
    the run's name (``best.pkl`` for best.yaml), so that one recipe's model never replaces
    another's. ``save_epochs`` keeps a checkpoint file per epoch besides ``last.pkl`` and
    ``best.pkl``. ``snapshots`` keeps copies of the parameters at about 44 steps of the
    run in its ``snapshots/`` folder, to replay it (``numpycnn.runlog``).
    """

    params: str | None = None  # None: NAME.pkl, after the run's name
    runs_dir: str = "runs"
    name: str | None = None
    save_epochs: bool = False
    snapshots: bool = True


def _reference_specs():
    return tuple(build_layer(spec).spec() for spec in REFERENCE_LAYERS)


@dataclass(frozen=True)
class Config:
    """A whole, validated configuration. Make one with ``load_config`` or ``from_dict``.

    ``network`` holds each layer's full spec (aliases resolved, defaults written out), so
    equal networks compare equal however they were written.
    """

    network: tuple[dict, ...] = field(default_factory=_reference_specs)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self):
        """Plain data in the file schema (for model files, checkpoints or a YAML dump)."""
        augment = self.data.augment
        return {
            "network": [dict(spec) for spec in self.network],
            "data": {
                **dataclasses.asdict(self.data),
                "mirrors": list(self.data.mirrors),
                "input_shape": None
                if self.data.input_shape is None
                else list(self.data.input_shape),
                "augment": None if augment is None else dataclasses.asdict(augment),
            },
            "training": {
                **dataclasses.asdict(self.training),
                "optimizer": self.training.optimizer.to_dict(),
                "schedule": self.training.schedule.to_dict(),
            },
            "output": dataclasses.asdict(self.output),
        }

    @classmethod
    def from_dict(cls, data, source="config"):
        """A validated Config from plain data in the file schema; ``source`` names it in errors.

        Configs stored by earlier versions (in model files and checkpoints) still load, with
        their meaning: their ``output.checkpoint_dir``, which run folders replaced, is
        dropped, and one stored before schedules existed keeps the exponential schedule it
        trained with (the default schedule is one-cycle now).
        """
        if isinstance(data, dict) and isinstance(data.get("output"), dict):
            output = {k: v for k, v in data["output"].items() if k != "checkpoint_dir"}
            data = {**data, "output": output}
        if isinstance(data, dict) and isinstance(data.get("training"), dict):
            if "schedule" not in data["training"]:
                training = {**data["training"], "schedule": {"name": "exponential"}}
                data = {**data, "training": training}
        return _parse(data, source)

    def with_overrides(
        self,
        epochs=None,
        batch_size=None,
        lr=None,
        seed=None,
        limit=None,
        params=None,
        data_dir=None,
        mirrors=None,
        name=None,
        runs_dir=None,
    ):
        """A new validated Config with the given values (None keeps the current one)."""
        raw = self.to_dict()
        overrides = {
            "training": {"epochs": epochs, "batch_size": batch_size, "seed": seed},
            "data": {"limit": limit, "data_dir": data_dir, "mirrors": mirrors},
            "output": {"params": params, "name": name, "runs_dir": runs_dir},
        }
        for section, values in overrides.items():
            raw[section].update(_given(values))
        raw["training"]["optimizer"].update(_given({"lr": lr}))
        return _parse(raw, "overrides")


#: Our recommended recipe for the reference network, configs/default.yaml: what ``numpycnn
#: train`` uses without a config file, and what every key a file leaves out takes. There is
#: one set of defaults, so an empty file, no file and default.yaml train the same network.
DEFAULT_RECIPE = Config()


def _given(values):
    return {key: value for key, value in values.items() if value is not None}


#: The built-in configs (recipes), installed with the package; the repository's configs/
#: folder links here.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def builtin_configs():
    """{name: path} of the built-in configs, sorted by name. A file's name is its stem
    (``best`` for best.yaml); a file whose stem a YAML file already has (the INI twin
    escontrela.ini) is named by its file name."""
    files = sorted(
        (p for p in CONFIG_DIR.iterdir() if p.suffix.lower() in EXTENSIONS),
        key=lambda p: (p.stem, p.suffix.lower() == ".ini", p.suffix),
    )
    found = {}
    for path in files:
        found[path.name if path.stem in found else path.stem] = path
    return found


def builtin_config(name):
    """(name, path) of the built-in config called ``name`` (or by its file name,
    ``best.yaml``); ``ConfigError`` naming the closest names if there is none."""
    known = builtin_configs()
    if name in known:
        return name, known[name]
    for known_name, path in known.items():
        if path.name == name:
            return known_name, path
    names = list(known)
    raise ConfigError(
        f"unknown config {name!r}{_close(name, names)}: no such file, nor a built-in "
        f"config (built-in: {', '.join(names)}; `numpycnn configs` describes them)"
    )


def find_config(config):
    """The config file ``config`` names: a path, when a file is there (a path always
    wins), else a built-in config's name (``best``, or its file name ``best.yaml``).
    Raises ``ConfigError`` for a bare name that is neither, with the closest names; a
    missing path (with a folder, or a file name that no built-in config has) is left for
    the reader to report."""
    source = os.fspath(config)
    path = Path(source)
    if path.is_file() or path.parent != Path("."):
        return path
    try:
        return builtin_config(source)[1]
    except ConfigError:
        if path.suffix.lower() in EXTENSIONS:  # a file name: "no such file", as before
            return path
        raise


def load_config(path):
    """The Config in a .yaml, .yml or .ini file, or of a built-in config by name
    (``find_config``: a file of that name wins)."""
    source = os.fspath(find_config(path))
    suffix = Path(source).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ConfigError(
            f"{source}: unknown config format {suffix or '(no extension)'!r} "
            f"(expected {', '.join(EXTENSIONS)})"
        )
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    ini = suffix == ".ini"
    try:
        raw = _read_ini(text, source) if ini else _read_yaml(text)
    except _Problem as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return _parse(raw, source, ini)


# ----- reading files -----


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-7`` as a float (as YAML 1.2 does) and refuses duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_yaml(text):
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = " ".join(f"{exc.problem or ''} {exc.context or ''}".split())
        raise _Problem(f"line {mark.line + 1}, column {mark.column + 1}: {problem}") from None
    except yaml.YAMLError as exc:
        raise _Problem(" ".join(str(exc).split())) from None


def _ini_error(exc):
    """(line number, description) of a configparser error."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        key = re.split(r"[=:]", exc.line, maxsplit=1)[0].strip()
        home = _home_of(key, ini=True)
        if home:
            return exc.lineno, f"{key!r} belongs under {home}"
        return exc.lineno, "a key before the first [section]"
    if isinstance(exc, configparser.DuplicateSectionError):
        return exc.lineno, f"duplicate section [{exc.section}]"
    if isinstance(exc, configparser.DuplicateOptionError):
        return exc.lineno, f"duplicate key {exc.option!r} in [{exc.section}]"
    if isinstance(exc, configparser.ParsingError):
        lineno, line = exc.errors[0]
        return lineno, f"cannot parse {line} (expected 'key = value' or '[section]')"
    return None, " ".join(str(exc).split())


def _ini_scalar(text):
    """An INI value as null, int, float or, failing those, the text itself."""
    if text.lower() in ("null", "none"):
        return None
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def _ini_value(cls, key, text):
    """An INI value parsed for the dataclass field it sets: str fields keep the text."""
    kind = {f.name: f.type for f in dataclasses.fields(cls)}.get(key)
    if kind is bool and text.lower() in configparser.ConfigParser.BOOLEAN_STATES:
        return configparser.ConfigParser.BOOLEAN_STATES[text.lower()]
    if kind is str or (kind == str | None and text.lower() not in ("null", "none")):
        return text
    if kind == tuple[str, ...]:
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == tuple[int, ...] | None and text.lower() not in ("null", "none"):
        return [_ini_scalar(part.strip()) for part in text.strip("[]").split(",")]
    return _ini_scalar(text)


_INI_SECTIONS = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "training": TrainingConfig,
    "output": OutputConfig,
}


def _read_ini(text, source):
    """The INI file as the nested dict a YAML file gives."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # keys are case-sensitive, as in YAML
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        lineno, problem = _ini_error(exc)
        raise _Problem(f"line {lineno}: {problem}" if lineno else problem) from None
    if parser.defaults():
        raise _Problem("a [DEFAULT] section is not supported")
    raw, layers = {}, {}
    for name in parser.sections():
        items = parser.items(name)
        number = name.removeprefix("layer.")
        if number != name and number.isdigit():
            layers[int(number)] = {k: _ini_scalar(v) for k, v in items}
        elif name in ("optimizer", "schedule"):
            raw.setdefault("training", {})[name] = {k: _ini_scalar(v) for k, v in items}
        elif name == "augment":
            raw.setdefault("data", {})["augment"] = {k: _ini_scalar(v) for k, v in items}
        elif name in _INI_SECTIONS:
            cls = _INI_SECTIONS[name]
            raw.setdefault(name, {}).update({k: _ini_value(cls, k, v) for k, v in items})
        else:
            known = [*_INI_SECTIONS, "optimizer", "schedule", "layer.N"]
            raise _Problem(f"unknown section [{name}]{_hint(name, known)}")
    if layers:
        if sorted(layers) != list(range(1, len(layers) + 1)):
            found = ", ".join(f"layer.{n}" for n in sorted(layers))
            raise _Problem(f"layer sections must be numbered 1, 2, 3, ... (found {found})")
        raw["network"] = [layers[n] for n in sorted(layers)]
    return raw


# ----- checking values -----


def _close(word, known):
    matches = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _hint(word, known):
    """A suggestion for a mistyped name, or the list of known names."""
    return _close(word, known) or f" (known: {', '.join(map(str, known)) or 'none'})"


def _section(raw, cls, where):
    """The section's values with omitted keys filled from ``cls``'s defaults."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _Problem(f"{where}: expected a mapping of keys, got {raw!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key == "checkpoint_dir" and where == "output":
            raise _Problem(
                "'output.checkpoint_dir' is no longer used: each run keeps its checkpoints in "
                "its own folder under 'output.runs_dir' (default runs/)"
            )
        if key not in known:
            raise _Problem(f"unknown key '{where}.{key}'{_hint(key, known)}")
    return {name: raw[name] if name in raw else _default(f) for name, f in known.items()}


def _default(f):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(where, value, minimum, maximum=None, optional=False):
    if optional and value is None:
        return None
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        span = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        nullable = " or null" if optional else ""
        raise _Problem(f"{where}: expected an integer {span}{nullable}, got {value!r}")
    return value


def _number(where, value):
    """A finite int or float, as a float (booleans are not numbers here)."""
    if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
        raise _Problem(f"{where}: expected a number, got {value!r}")
    return float(value)


def _fraction(where, value):
    """A number in (0, 1]."""
    number = _number(where, value)
    if not 0 < number <= 1:
        raise _Problem(f"{where}: expected a number in (0, 1], got {value!r}")
    return number


def _text(where, value):
    if not isinstance(value, str) or not value:
        raise _Problem(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _texts(where, value):
    if not isinstance(value, (list, tuple)):
        raise _Problem(f"{where}: expected a list of strings, got {value!r}")
    return tuple(_text(f"{where}[{i}]", item) for i, item in enumerate(value))


def _choice(where, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise _Problem(
            f"{where}: expected one of {', '.join(choices)}, got {value!r}{_close(value, choices)}"
        )
    return value


def _bounded(where, value, low, high, high_open=False):
    """A number in [low, high] (or [low, high) with ``high_open``)."""
    number = _number(where, value)
    if not (low <= number < high if high_open else low <= number <= high):
        bracket = ")" if high_open else "]"
        raise _Problem(f"{where}: expected a number in [{low:g}, {high:g}{bracket}, got {value!r}")
    return number


def _flip(where, value):
    """``flip``: true (probability 0.5), false, or a probability in [0, 1]."""
    if isinstance(value, str) and value.lower() in _BOOLEANS:  # INI's true/false/yes/no
        value = _BOOLEANS[value.lower()]
    if isinstance(value, bool):
        return FLIP_TRUE if value else 0.0
    return _bounded(where, value, 0, 1)


_BOOLEANS = configparser.ConfigParser.BOOLEAN_STATES


def _augment(raw, shape):
    """The augmentation; ``shift`` may move an image by at most half its smaller side."""
    if raw is None:
        return None
    v = _section(raw, AugmentConfig, "data.augment")
    return AugmentConfig(
        shift=_bounded("data.augment.shift", v["shift"], 0, min(shape[1:]) // 2),
        rotate=_bounded("data.augment.rotate", v["rotate"], 0, 180),
        scale=_bounded("data.augment.scale", v["scale"], 0, 1, high_open=True),
        flip=_flip("data.augment.flip", v["flip"]),
    )


def _input_shape(where, value):
    """[C, H, W] with C 1 or 3 and sides 1 to 1024 (``datasets.folder``'s rule)."""
    from .datasets.folder import _check_shape

    try:
        return _check_shape(value)
    except ValueError as exc:
        raise _Problem(f"{where}: {exc}") from None


def _dataset(v):
    """(dataset, path, input_shape, test_fraction, resize), checked against the set."""
    from . import datasets

    name = v["dataset"]
    try:
        datasets.get(name)
    except ValueError as exc:
        raise _Problem(f"data.dataset: {exc}") from None
    shape = None if v["input_shape"] is None else _input_shape("data.input_shape", v["input_shape"])
    fraction = _number("data.test_fraction", v["test_fraction"])
    if not 0 < fraction < 1:
        raise _Problem(f"data.test_fraction: expected a number in (0, 1), got {fraction!r}")
    resize = _choice("data.resize", v["resize"], RESIZES)
    if name == FOLDER:
        if v["path"] is None:
            raise _Problem("data.path: dataset folder needs the folder's path (data.path: DIR)")
        return name, _text("data.path", v["path"]), shape, fraction, resize
    if v["path"] is not None:
        raise _Problem(f"data.path: only for dataset: folder (dataset {name} is downloaded)")
    own = FIXED_SETS[name][1]
    if shape is not None and shape != own:
        raise _Problem(
            f"data.input_shape: {list(shape)} is not {name}'s own shape {list(own)} "
            "(input_shape chooses the size of folder images only)"
        )
    for key, value in (("test_fraction", fraction), ("resize", resize)):
        if value != FOLDER_DEFAULTS[key]:
            raise _Problem(f"data.{key}: only for dataset: folder ({name} has its own test set)")
    return name, None, shape, fraction, resize


def _data(raw):
    v = _section(raw, DataConfig, "data")
    dataset, path, shape, fraction, resize = _dataset(v)
    known = FIXED_SETS.get(dataset, (None,))[0]  # a folder's size is known at load time
    cap = MNIST_TRAIN_IMAGES if known is None else known
    data = DataConfig(
        data_dir=_text("data.data_dir", v["data_dir"]),
        mirrors=_texts("data.mirrors", v["mirrors"]),
        limit=_integer("data.limit", v["limit"], 1, known, optional=True),
        validation=_integer(
            "data.validation", v["validation"], 0, None if known is None else known - 1
        ),
        normalization=_choice("data.normalization", v["normalization"], NORMALIZATIONS),
        augment=None,
        dataset=dataset,
        path=path,
        input_shape=shape,
        test_fraction=fraction,
        resize=resize,
    )
    data = dataclasses.replace(data, augment=_augment(v["augment"], data.shape))
    if known is not None and data.limit is not None and data.limit + data.validation > cap:
        label = "MNIST" if dataset == "mnist" else dataset
        raise _Problem(
            f"data: limit {data.limit} plus validation {data.validation} exceeds the "
            f"{cap} {label} training images"
        )
    return data


def _optimizer(raw, where):
    """The optimiser's name and hyperparameters, checked by constructing it."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _Problem(f"{where}: expected a mapping with 'name' and hyperparameters, got {raw!r}")
    default = OptimizerConfig()
    name = _choice(f"{where}.name", raw.get("name", default.name), tuple(optim.OPTIMIZERS))
    cls = optim.OPTIMIZERS[name]
    accepted = inspect.signature(cls).parameters
    # the default optimiser's omitted settings are the defaults' (Adam at 0.003), so that
    # {name: adam} means what no optimizer section means; another takes its own defaults
    kwargs = dict(default.hyperparameters) if name == default.name else {}
    for key, value in raw.items():
        if key == "name":
            continue
        if key not in accepted:
            raise _Problem(f"unknown key '{where}.{key}' for {name}{_hint(key, accepted)}")
        kwargs[key] = _number(f"{where}.{key}", value)
    for param in accepted.values():
        if param.default is inspect.Parameter.empty and param.name not in kwargs:
            raise _Problem(f"{where}: optimizer {name} needs {param.name!r}")
    try:
        optimizer = cls(**kwargs)
    except ValueError as exc:
        raise _Problem(f"{where}: {exc}") from None
    return OptimizerConfig(name, optimizer.hyperparameters())


def _schedule(raw, where, lr_decay):
    """The schedule's name and settings, checked by constructing it."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _Problem(f"{where}: expected a mapping with 'name' and settings, got {raw!r}")
    default = ScheduleConfig().name
    name = _choice(f"{where}.name", raw.get("name", default), tuple(schedules.SCHEDULES))
    if name == "exponential":
        accepted = {}
    else:
        accepted = inspect.signature(schedules.SCHEDULES[name]).parameters
    settings = {}
    for key, value in raw.items():
        if key == "name":
            continue
        if name == "exponential" and key == "decay":
            raise _Problem(f"{where}: the exponential schedule's decay is 'training.lr_decay'")
        if key not in accepted:
            raise _Problem(f"unknown key '{where}.{key}' for {name}{_hint(key, accepted)}")
        settings[key] = _number(f"{where}.{key}", value)
    if name != "exponential" and lr_decay != 1:
        raise _Problem(
            f"training.lr_decay {lr_decay:g} applies to the exponential schedule only, "
            f"not to {name}: set {where} to {{name: exponential}}, or remove lr_decay"
        )
    try:
        schedule = schedules.get(name, **settings)
    except ValueError as exc:
        raise _Problem(f"{where}: {exc}") from None
    return ScheduleConfig(name, {} if name == "exponential" else schedule.settings())


def _training(raw, optimizer_where, schedule_where):
    v = _section(raw, TrainingConfig, "training")
    lr_decay = _fraction("training.lr_decay", v["lr_decay"])
    return TrainingConfig(
        epochs=_integer("training.epochs", v["epochs"], 1),
        batch_size=_integer("training.batch_size", v["batch_size"], 1),
        loss=_choice("training.loss", v["loss"], tuple(losses.LOSSES)),
        init=_choice("training.init", v["init"], tuple(initialisers.INITIALISERS)),
        dtype=_choice("training.dtype", v["dtype"], DTYPES),
        seed=_integer("training.seed", v["seed"], 0),
        lr_decay=lr_decay,
        optimizer=_optimizer(raw.get("optimizer") if raw else None, optimizer_where),
        schedule=_schedule(raw.get("schedule") if raw else None, schedule_where, lr_decay),
    )


def _run_name(where, value):
    """A run folder's name: one path component, so a run never writes outside runs_dir."""
    if value is None:
        return None
    name = _text(where, value)
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise _Problem(f"{where}: expected a plain folder name (no slashes), got {value!r}")
    return name


def _output(raw):
    v = _section(raw, OutputConfig, "output")
    if not isinstance(v["save_epochs"], bool):
        raise _Problem(f"output.save_epochs: expected true or false, got {v['save_epochs']!r}")
    if not isinstance(v["snapshots"], bool):
        raise _Problem(f"output.snapshots: expected true or false, got {v['snapshots']!r}")
    return OutputConfig(
        params=None if v["params"] is None else _text("output.params", v["params"]),
        runs_dir=_text("output.runs_dir", v["runs_dir"]),
        name=_run_name("output.name", v["name"]),
        save_epochs=v["save_epochs"],
        snapshots=v["snapshots"],
    )


def _layer(spec, where):
    """One layer built from its spec, with its keys checked against the constructor."""
    if not isinstance(spec, dict):
        raise _Problem(f"{where}: expected a mapping such as {{type: relu}}, got {spec!r}")
    if "type" not in spec:
        raise _Problem(f"{where}: missing key 'type'")
    kinds = (*LAYERS, *ALIASES)
    kind = spec["type"]
    if not isinstance(kind, str) or kind not in kinds:
        raise _Problem(f"{where}.type: unknown layer type {kind!r}{_hint(kind, kinds)}")
    accepted = inspect.signature(LAYERS[ALIASES.get(kind, kind)]).parameters
    for key in spec:
        if key != "type" and key not in accepted:
            raise _Problem(f"unknown key '{where}.{key}' for {kind}{_hint(key, accepted)}")
    for param in accepted.values():
        if param.default is inspect.Parameter.empty and param.name not in spec:
            raise _Problem(f"{where}: {kind} needs {param.name!r}")
    if spec.get("init") is not None:
        _choice(f"{where}.init", spec["init"], tuple(initialisers.INITIALISERS))
    try:
        return build_layer(spec)
    except ValueError as exc:
        raise _Problem(f"{where} ({kind}): {exc}") from None


def folder_classes(path):
    """The class folders' count of an image folder (``datasets.folder``'s layout), listed
    without reading any image; None when the folder cannot be listed (then loading it says
    why)."""
    from .datasets.folder import _subfolders

    root = Path(path).expanduser()
    train = root / "train"
    try:
        return len(_subfolders(train if train.is_dir() else root))
    except Exception:  # noqa: BLE001 - missing or unreadable: the load reports it
        return None


def data_description(data):
    """How errors name the data: 'the 1x28x28 MNIST image', 'data folder 'pets''."""
    c, h, w = data.shape
    if data.dataset == FOLDER:
        return f"the {c}x{h}x{w} image of data folder {Path(data.path).name!r}"
    return f"the {c}x{h}x{w} {'MNIST' if data.dataset == 'mnist' else data.dataset} image"


def check_classes(outputs, classes, data, last):
    """A one-line _Problem unless the network's ``outputs`` scores match the data's
    ``classes``; ``last`` names the last layer ('network[8] (dense)')."""
    if outputs == (classes,):
        return
    what = (
        f"data folder {Path(data.path).name!r} has {classes} classes"
        if data.dataset == FOLDER
        else ("MNIST needs" if data.dataset == "mnist" else f"{data.dataset} needs")
        + f" {classes} class scores"
    )
    raise _Problem(f"network: the last layer, {last}, gives shape {outputs}, but {what}")


def _network(raw, training, layer_where, data=None):
    """The canonical layer specs, checked layer by layer on the data's input shape, and the
    last layer against its class count (a folder's: its class folders, when listable)."""
    data = DataConfig() if data is None else data
    if not isinstance(raw, list) or not raw:
        raise _Problem(f"network: expected a non-empty list of layer specs, got {raw!r:.60}")
    layers = [_layer(spec, layer_where(i)) for i, spec in enumerate(raw)]
    try:
        shapes = infer_shapes(layers, data.shape, layer_where, data_description(data))
    except ValueError as exc:
        raise _Problem(str(exc)) from None
    specs, shape = [layer.spec() for layer in layers], shapes[-1][2]
    if data.dataset == FOLDER:
        classes = folder_classes(data.path)
    else:
        classes = FIXED_SETS[data.dataset][2]
    if classes is not None:
        check_classes(shape, classes, data, f"{layer_where(len(layers) - 1)} ({layers[-1].kind})")
    try:
        Sequential(
            specs, loss=training.loss, init=training.init, dtype=training.dtype,
            input_shape=data.shape,
        )  # fmt: skip
    except ValueError as exc:
        raise _Problem(f"network: {exc}") from None
    return tuple(specs)


def _home_of(key, ini=False):
    """Where a key written at the top level of a file belongs ('training:' or [training]),
    or None if no section has it."""
    homes = {"optimizer": ("training", "optimizer"), "schedule": ("training", "schedule")}
    homes["augment"] = ("data", "augment")
    for section, cls in (("data", DataConfig), ("training", TrainingConfig)):
        homes.update({f.name: (section, f.name) for f in dataclasses.fields(cls)})
    homes.update({f.name: ("output", f.name) for f in dataclasses.fields(OutputConfig)})
    for f in dataclasses.fields(AugmentConfig):
        homes.setdefault(f.name, ("augment", f.name) if ini else ("data.augment", f.name))
    optimizer_keys = {
        k for cls in optim.OPTIMIZERS.values() for k in inspect.signature(cls).parameters
    }
    for k in sorted(optimizer_keys):
        homes.setdefault(k, ("optimizer", k) if ini else ("training.optimizer", k))
    if key not in homes:
        return None
    section = homes[key][0]
    if ini:
        return f"[{section}]"
    return f"'{section}:'"


def _near_key(word):
    """' (did you mean 'epochs', under 'training:'?)' for a misspelt key at the top level."""
    keys = [
        f.name
        for cls in (DataConfig, TrainingConfig, OutputConfig)
        for f in dataclasses.fields(cls)
    ]
    match = difflib.get_close_matches(str(word), keys, n=1)
    return f" (did you mean {match[0]!r}, under {_home_of(match[0])}?)" if match else ""


def _parse(raw, source, ini=False):
    """A Config from the nested dict a file gives; ``ini`` names places as the INI file does."""
    try:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise _Problem(f"expected a mapping of sections ({', '.join(SECTIONS)}), got {raw!r}")
        for key in raw:
            if key not in SECTIONS:
                home = _home_of(key)
                if home:
                    raise _Problem(f"{key!r} belongs under {home}")
                near = _close(key, SECTIONS) or _near_key(key)
                raise _Problem(f"unknown section {key!r}{near or _hint(key, SECTIONS)}")
        training = _training(
            raw.get("training"),
            "optimizer" if ini else "training.optimizer",
            "schedule" if ini else "training.schedule",
        )
        layer_where = (lambda i: f"layer.{i + 1}") if ini else (lambda i: f"network[{i}]")
        data = _data(raw.get("data"))
        network = raw.get("network")
        if network is None and data.shape != MNIST_SHAPE:
            raise _Problem(
                f"network: the default network takes 1x28x28 images, but {data_description(data)}"
                " differs: write a network for it (configs/cifar10.yaml is one for 3x32x32)"
            )
        network = list(_reference_specs()) if network is None else network
        network = _network(network, training, layer_where, data)
        return Config(
            network=network,
            data=data,
            training=training,
            output=_output(raw.get("output")),
        )
    except _Problem as exc:
        raise ConfigError(f"{source}: {exc}") from None
