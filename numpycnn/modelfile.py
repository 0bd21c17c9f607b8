"""Model files: a trained network with what is needed to use it, in one pickle of plain data.

The pickle holds a dict: the format name and version, the layer specs, loss, input shape and
dtype that rebuild the network, its parameters (NumPy arrays, in the model's order), the
per-batch cost history, the input normalisation, and optionally the config, metrics and a
training checkpoint, and the network's state (batch norm's running statistics) when it
has any. Loading never runs code from the file: the unpickler admits only the
globals that NumPy arrays, dtypes and scalars need, so a malicious file is refused, not run,
and memory stays bounded by what the file holds (see ``safepickle``).

The reference's own pickle, ``[params, cost]`` as Escontrela's code wrote it, loads as the
reference network with the normalisation of its training images.
"""

import numbers
import os
import pickle
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, safepickle
from .config import NORMALIZATIONS
from .engine.model import MNIST_SHAPE, REFERENCE_LAYERS, Sequential, count_params
from .words import a

FORMAT = "numpycnn-model"
VERSION = 1
PROTOCOL = 5
#: The reference's pickle: its training statistics, truncated to integers (SPEC.md).
REFERENCE_NORMALIZATION = {"strategy": "reference", "mean": 33.0, "std": 78.0}
LEGACY_FORMAT = "escontrela-2018"
#: What a file that names no data source was trained on (every file before 0.x: MNIST).
MNIST_SOURCE = {"dataset": "mnist"}
DIGITS = tuple(str(k) for k in range(10))
#: Bytes of parameters any file may describe before they must fit in the file itself (so
#: that a wrong parameter shape is reported as such, not as a too-large network).
SMALL_NETWORK = 64 * 2**20
REQUIRED = (
    "format",
    "version",
    "numpycnn_version",
    "layers",
    "loss",
    "input_shape",
    "dtype",
    "params",
    "cost",
    "normalization",
    "config",
    "metrics",
)
METADATA = ("format", "version", "numpycnn_version", "layers", "loss", "input_shape", "dtype")


class ModelFileError(ValueError):
    """A model file that cannot be read, written or trusted."""


class _Problem(Exception):
    """A problem with a file's contents; ``ModelFileError`` adds the file name in one place."""


@dataclass
class ModelFile:
    """A loaded model file. ``config`` is plain data (``Config.from_dict`` rebuilds it);
    ``metadata`` holds the stored format, versions and network description; ``history`` is
    one plain dict per trained epoch (``training.EpochStats`` as a dict), empty for files
    written before it existed."""

    model: Sequential
    normalization: dict
    cost: list
    config: dict | None
    metrics: dict | None
    checkpoint: dict | None
    metadata: dict
    history: list = field(default_factory=list)
    #: Where the training images came from (``datasets.Dataset.source``, which
    #: ``datasets.load`` takes back), and the name of each output class.
    data_source: dict = field(default_factory=lambda: dict(MNIST_SOURCE))
    class_names: list = field(default_factory=lambda: list(DIGITS))


def default_class_names(count):
    """Class names for a file that records none: the digits for MNIST's ten classes."""
    return [str(k) for k in range(count)]


def _unpickle(data):
    """The object pickled in ``data``, without running anything but NumPy's constructors,
    and with memory bounded by what the file holds (``safepickle``)."""
    try:
        return safepickle.loads(data)
    except safepickle.UnsafePickle as exc:
        raise _Problem(str(exc)) from None


def _is_legacy(obj):
    """Whether ``obj`` looks like the reference's ``[params, cost]``."""
    return (
        isinstance(obj, (list, tuple))
        and len(obj) == 2
        and isinstance(obj[0], (list, tuple))
        and all(isinstance(p, np.ndarray) for p in obj[0])
    )


def _from_legacy(obj):
    """The reference's ``[params, cost]`` as a stored dict of this format."""
    params, cost = obj
    return {
        "format": LEGACY_FORMAT,
        "version": None,
        "numpycnn_version": None,
        "layers": [dict(spec) for spec in REFERENCE_LAYERS],
        "loss": "softmax_cross_entropy",
        "input_shape": list(MNIST_SHAPE),
        "dtype": str(params[0].dtype) if params else "float64",
        "params": list(params),
        "cost": cost,
        "normalization": dict(REFERENCE_NORMALIZATION),
        "config": None,
        "metrics": None,
    }


def _check_header(stored):
    if not isinstance(stored, dict) or "format" not in stored:
        raise _Problem(f"not a numpycnn model file (it holds {a(type(stored).__name__)})")
    if stored["format"] != FORMAT:
        raise _Problem(f"not a numpycnn model file (format {_show(stored['format'])})")
    if stored.get("version") != VERSION:
        raise _Problem(
            f"unsupported model file version {_show(stored.get('version'))} "
            f"(this numpycnn reads version {VERSION})"
        )
    missing = [key for key in REQUIRED if key not in stored]
    if missing:
        raise _Problem(f"missing key{'s' * (len(missing) > 1)} {', '.join(missing)}")


def _show(value, limit=80):
    """A short repr of a value from the file, for a message: at most ``limit`` characters,
    and never an error (an int of 5,000 digits has no repr)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return a(type(value).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _real(value):
    """A number (not a bool) that a float can hold: an int of 400 digits is not."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


#: Most channels a per-channel normalisation may list (RGB).
MAX_CHANNELS = 3


def _per_channel(value):
    """A list of 1 to MAX_CHANNELS reals (per-channel statistics), else None."""
    if isinstance(value, (list, tuple)) and 1 <= len(value) <= MAX_CHANNELS:
        if all(_real(v) for v in value):
            return [float(v) for v in value]
    return None


def _normalization(value):
    """A normalisation dict (or object with ``to_dict``) as plain {strategy, mean, std}:
    numbers, or lists of one number per channel (colour models' statistics)."""
    value = value.to_dict() if hasattr(value, "to_dict") else value
    ok = isinstance(value, dict) and value.get("strategy") in NORMALIZATIONS
    if ok and _real(value.get("mean")) and _real(value.get("std")) and value["std"] > 0:
        return {
            "strategy": value["strategy"],
            "mean": float(value["mean"]),
            "std": float(value["std"]),
        }
    mean = _per_channel(value.get("mean")) if ok else None
    std = _per_channel(value.get("std")) if ok else None
    if mean and std and len(mean) == len(std) and all(s > 0 for s in std):
        return {"strategy": value["strategy"], "mean": mean, "std": std}
    raise _Problem(
        f"normalization must be {{strategy: {' | '.join(NORMALIZATIONS)}, mean: number, "
        f"std: number > 0}} (or lists of one per channel), got {_show(value)}"
    )


def _cost(value):
    if not isinstance(value, (list, tuple)) or not all(_real(c) for c in value):
        raise _Problem("cost must be a list of numbers")
    return [float(c) for c in value]


def _history(value):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(e, dict) for e in value):
        raise _Problem("history must be a list of dicts, one per epoch")
    return [dict(e) for e in value]


def _plain(value, depth=0):
    """Whether ``value`` is plain JSON-like data (str, number, bool, None, lists, dicts with
    string keys), as a data source description must be."""
    if depth > 8:
        return False
    if value is None or isinstance(value, (str, bool)) or _real(value):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _data(value, model):
    """The stored ``data`` entry as (source dict, class names), checked against the network:
    one name per class score. A file without it was trained on MNIST."""
    outputs = int(model.output_shape[-1])
    if value is None:
        return dict(MNIST_SOURCE), default_class_names(outputs)
    if not isinstance(value, dict):
        raise _Problem(f"data must be a dict {{source, class_names}}, got {_show(value)}")
    source = value.get("source", MNIST_SOURCE)
    if not isinstance(source, dict) or not isinstance(source.get("dataset"), str):
        raise _Problem(f"data.source must be a dict with a 'dataset' name, got {_show(source)}")
    if not _plain(source):
        raise _Problem(f"data.source must be plain data, got {_show(source)}")
    names = value.get("class_names")
    if names is None:
        names = default_class_names(outputs)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise _Problem(f"data.class_names must be a list of strings, got {_show(names)}")
    if len(names) != outputs:
        raise _Problem(
            f"data.class_names has {len(names)} names but the network gives {outputs} class scores"
        )
    return dict(source), list(names)


def _optional_dict(key, value):
    value = value.to_dict() if hasattr(value, "to_dict") else value
    if value is not None and not isinstance(value, dict):
        raise _Problem(f"{key} must be a dict or None, got {type(value).__name__}")
    return value


def build_network(stored, size):
    """The network the stored dict's ``layers``, ``loss``, ``input_shape`` and ``dtype``
    describe, its parameters not yet set. ``size`` is the file's: a network with more
    parameters than it can hold (and over ``SMALL_NETWORK`` bytes) is refused before it is
    built, so a few bytes cannot ask for gigabytes. Every model-file format reads through
    here (the safetensors reader too)."""
    layers = stored["layers"]
    if not isinstance(layers, (list, tuple)) or not all(isinstance(s, dict) for s in layers):
        raise _Problem("layers must be a list of layer specs (dicts)")
    if not isinstance(stored["loss"], str):
        raise _Problem(f"loss must be a loss name, got {a(type(stored['loss']).__name__)}")
    try:
        count = count_params(layers, stored["input_shape"])
        if count * 4 > max(size, SMALL_NETWORK):  # float32, the smallest parameter dtype
            raise _Problem(
                f"the network it describes has {count:,} parameters, more than the file's "
                f"{size:,} bytes can hold"
            )
        model = Sequential(
            stored["layers"],
            loss=stored["loss"],
            input_shape=stored["input_shape"],
            dtype=stored["dtype"],
        )
    except (ValueError, TypeError) as exc:
        raise _Problem(f"cannot rebuild the network: {exc}") from None
    return model


def _model(stored, size):
    """The network the stored dict describes (``build_network``), with its parameters set."""
    model = build_network(stored, size)
    params = stored["params"]
    _check_arrays("params", "parameter", params, model.param_names)
    try:
        model.set_params(params)
    except ValueError as exc:
        raise _Problem(str(exc)) from None
    _set_state(model, stored.get("state"))
    return model


def _check_arrays(key, item, values, names):
    """That ``values`` (the stored ``key``) is one real NumPy array for each of ``names``;
    ``_Problem`` naming the count or the ``item`` at fault."""
    if not isinstance(values, (list, tuple)) or len(values) != len(names):
        count = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        raise _Problem(f"{key}: expected {len(names)} arrays ({', '.join(names)}), got {count}")
    for name, value in zip(names, values):
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
            raise _Problem(f"{item} {name}: expected a real NumPy array, got {_show(value)}")


def _set_state(model, state):
    """Load the stored state (batch norm's running statistics) into ``model``. A file
    without any (written before batch norm existed, or of a network without state) keeps
    the model's initial state."""
    if state is None:
        return
    _check_arrays("state", "state", state, model.state_names)
    try:
        model.set_state(state)
    except ValueError as exc:
        raise _Problem(str(exc)) from None


def _model_file(stored, size):
    """A ModelFile from a stored dict (this format's or a converted legacy one) read from a
    file of ``size`` bytes."""
    model = _model(stored, size)
    data_source, class_names = _data(stored.get("data"), model)
    return ModelFile(
        model=model,
        normalization=_normalization(stored["normalization"]),
        cost=_cost(stored["cost"]),
        config=_optional_dict("config", stored["config"]),
        metrics=_optional_dict("metrics", stored["metrics"]),
        checkpoint=_optional_dict("checkpoint", stored.get("checkpoint")),
        metadata={key: stored[key] for key in METADATA},
        history=_history(stored.get("history")),
        data_source=data_source,
        class_names=class_names,
    )


def _parse(data):
    obj = _unpickle(data)
    if _is_legacy(obj):
        return _model_file(_from_legacy(obj), len(data))
    _check_header(obj)
    return _model_file(obj, len(data))


def load_model(path):
    """The ModelFile at ``path``: this format (a pickle, or safetensors by suffix or content:
    ``export.safetensors_file``) or the reference's legacy ``[params, cost]``."""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{name}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{name}: cannot read: {exc.strerror or exc}") from None
    from .export import safetensors_file

    if safetensors_file.is_safetensors(name, data):
        return safetensors_file.load(name, data)
    try:
        return _parse(data)
    except _Problem as exc:
        raise ModelFileError(f"{name}: {_one_line(str(exc))}") from None


def _one_line(text):
    """``text`` with control characters (which a file's keys and strings may hold) escaped,
    so that an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def save_model(
    path,
    model,
    normalization,
    cost=(),
    config=None,
    metrics=None,
    checkpoint=None,
    history=None,
    data_source=None,
    class_names=None,
):
    """Write ``model`` and its companions to ``path`` atomically.

    ``normalization`` and ``config`` may be dicts or objects with ``to_dict()``. The pickle is
    read back with the loader's checks before it is written, so a file that could not be
    loaded (say, a checkpoint holding an arbitrary object) is never written. ``data_source``
    and ``class_names`` say what the network was trained on (default: MNIST's digits). A
    ``.safetensors``
    path gets a safetensors file (``export.safetensors_file``), which holds no checkpoint.
    """
    name = os.fspath(path)
    if name.lower().endswith(".safetensors"):
        if checkpoint is not None:
            raise ModelFileError(
                f"{name}: cannot save: a training checkpoint needs a pickle (.pkl); "
                "a safetensors file holds a finished model"
            )
        from .export import safetensors_file

        companions = dict(cost=cost, config=config, metrics=metrics, history=history)
        companions.update(data_source=data_source, class_names=class_names)
        return safetensors_file.save(name, model, normalization, **companions)
    try:
        stored = {
            "format": FORMAT,
            "version": VERSION,
            "numpycnn_version": __version__,
            "layers": model.specs(),
            "loss": model.loss.kind,
            "input_shape": list(model.input_shape),
            "dtype": str(model.dtype),
            "params": model.get_params(),
            "cost": _cost(list(cost)),
            "normalization": _normalization(normalization),
            "config": _optional_dict("config", config),
            "metrics": _optional_dict("metrics", metrics),
        }
        if model.num_state:
            stored["state"] = model.state()
        if checkpoint is not None:
            stored["checkpoint"] = _optional_dict("checkpoint", checkpoint)
        if history:
            stored["history"] = _history(history)
        if data_source is not None or class_names is not None:
            stored["data"] = {"source": data_source or dict(MNIST_SOURCE)}
            if class_names is not None:
                stored["data"]["class_names"] = list(class_names)
        data = pickle.dumps(stored, protocol=PROTOCOL)
        _parse(data)
    except _Problem as exc:
        raise ModelFileError(f"{name}: cannot save: {exc}") from None
    try:
        with atomic_write(name) as f:
            f.write(data)
    except OSError as exc:
        raise ModelFileError(f"{name}: cannot write: {exc.strerror or exc}") from None


@contextmanager
def atomic_write(path):
    """A binary file that replaces ``path`` only once fully written and flushed to disk.

    It is written under a temporary name in the same directory (so the rename cannot cross
    file systems) and removed if anything fails, leaving any previous ``path`` untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
