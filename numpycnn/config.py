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

Everything is checked when read, so that the rest of the program takes plain, valid values;
every problem is a ``ConfigError`` whose one-line message starts with the file name and
names the key at fault. This module holds the schema (the dataclasses and their defaults);
``configfile`` finds and reads files, ``configcheck`` checks their values.
"""

import dataclasses
from dataclasses import dataclass, field

from . import schedules
from .engine import optim
from .engine.model import (
    MNIST_SHAPE,
    REFERENCE_LAYERS,
    build_layer,
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


# The files and the checks live in their own modules, which build the dataclasses above
# (imported last, so that they find them defined):
# configfile: finding built-in configs, reading YAML and INI; configcheck: checking values.
from .configcheck import (  # noqa: E402, F401  (re-exported)
    _close,
    _hint,
    _parse,
    check_classes,
    data_description,
    folder_classes,
)
from .configfile import (  # noqa: E402, F401  (re-exported)
    CONFIG_DIR,
    builtin_config,
    builtin_configs,
    find_config,
    load_config,
)
