"""Checking a config's plain values (from a file, a model file or overrides) into the
frozen dataclasses of ``numpycnn.config``: one function per section, each value checked
where it is read, every problem one line naming the key (``_Problem``, to which
``ConfigError`` adds the source). The network is checked on the data's input shape and
its last layer against the data's class count."""

import configparser
import dataclasses
import difflib
import inspect
import math
from pathlib import Path

from . import schedules
from .config import (
    FIXED_SETS,
    FLIP_TRUE,
    FOLDER,
    FOLDER_DEFAULTS,
    MNIST_TRAIN_IMAGES,
    NORMALIZATIONS,
    RESIZES,
    SECTIONS,
    AugmentConfig,
    Config,
    ConfigError,
    DataConfig,
    OptimizerConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
    _Problem,
    _reference_specs,
)
from .engine import init as initialisers
from .engine import losses, optim
from .engine.model import (
    ALIASES,
    DTYPES,
    LAYERS,
    MNIST_SHAPE,
    Sequential,
    build_layer,
    infer_shapes,
)


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
