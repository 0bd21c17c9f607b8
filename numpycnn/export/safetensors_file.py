"""Model files in safetensors: the weights as named tensors, everything else as JSON strings
in the file's metadata. Unlike a pickle, no reader of any language can be made to run code
by such a file, so it is the format to hand to others.

Tensors are named as the ``state_dict`` of the equivalent ``torch.nn.Sequential``
(``export.torch_modules``): ``"{layer index}.weight"`` and ``"{layer index}.bias"``, biases
flat (F,), batch norm's as its buffers ``"{i}.running_mean"``, ``"{i}.running_var"`` and
``"{i}.num_batches_tracked"`` (int64, a scalar), so ``safetensors.torch.load_file`` gives a
dict that ``load_state_dict`` takes.
The metadata holds ``format``, ``version``, ``numpycnn_version``, ``loss`` and ``dtype`` as
plain strings and ``layers``, ``input_shape``, ``normalization``, ``classes``, ``config``,
``metrics``, ``cost``, ``history`` and ``data`` (the data source and class names) as JSON.
``modelfile.load_model`` and ``save_model`` dispatch here for such files.
"""

import json
import os

import numpy as np

from .. import __version__, modelfile
from ..engine.model import LAYERS
from .common import ExportError, classes, require, unsupported

VERSION = 1
SUFFIX = ".safetensors"
PLAIN = ("format", "version", "numpycnn_version", "loss", "dtype")
JSON = (
    "layers",
    "input_shape",
    "normalization",
    "classes",
    "config",
    "metrics",
    "cost",
    "history",
    "data",
)
#: Metadata a file may lack (written before it existed).
OPTIONAL = ("data",)
DTYPES = {"F32": "float32", "F64": "float64"}


def is_safetensors(name, data):
    """Whether ``data`` (the bytes of file ``name``) is to be read as safetensors: by its
    suffix, or by its content (an 8-byte header length, then a JSON object)."""
    if os.fspath(name).lower().endswith(SUFFIX):
        return True
    if len(data) < 9 or data[8:9] != b"{":
        return False
    return int.from_bytes(data[:8], "little") <= len(data) - 8


def _safetensors():
    """The safetensors package (a dependency; imported here so that pickles load without it)."""
    require("safetensors", "a safetensors model file", "pip install safetensors")
    return require("safetensors.numpy", "a safetensors model file", "pip install safetensors")


def tensor_name(index, param):
    return f"{index}.{param}"


def _stored_shape(layer, param, target):
    """A tensor's shape in the file: torch's (biases and batch norm's vectors flat)."""
    if param == "num_batches_tracked":
        return ()
    if param != "weight" or layer.kind in ("batchnorm2d", "batchnorm1d"):
        return (target.shape[0],)
    return target.shape


def _tensors(layer):
    """(name, array, dtype in the file) of a layer's parameters and state."""
    for param, value in [*layer.params.items(), *layer.state.items()]:
        dtype = np.int64 if param == "num_batches_tracked" else value.dtype
        yield param, value, dtype


def _json(key, value):
    def plain(v):
        if isinstance(v, np.generic | np.ndarray):
            return v.tolist()
        raise TypeError(f"{type(v).__name__} is not JSON data")

    try:
        return json.dumps(value, default=plain)
    except (TypeError, ValueError) as exc:
        raise modelfile.ModelFileError(f"metadata {key!r}: {exc}") from None


def to_bytes(
    model,
    normalization,
    cost=(),
    config=None,
    metrics=None,
    history=None,
    data_source=None,
    class_names=None,
):
    """The safetensors file of ``model`` and its companions (see the module docstring)."""
    tensors = {}
    for i, layer in enumerate(model.layers):
        if LAYERS.get(layer.kind) is not type(layer):  # the spec must rebuild this very layer
            raise unsupported(i, layer.kind, "a numpycnn model file")
        for param, value, dtype in _tensors(layer):
            # astype copies into a contiguous array (and keeps a 0-d one 0-d)
            tensors[tensor_name(i, param)] = value.reshape(
                _stored_shape(layer, param, value)
            ).astype(dtype)
    normalization = normalization.to_dict() if hasattr(normalization, "to_dict") else normalization
    config = config.to_dict() if hasattr(config, "to_dict") else config
    metadata = {
        "format": modelfile.FORMAT,
        "version": str(VERSION),
        "numpycnn_version": __version__,
        "loss": model.loss.kind,
        "dtype": str(model.dtype),
    }
    values = {
        "layers": model.specs(),
        "input_shape": list(model.input_shape),
        "normalization": normalization,
        "classes": list(class_names) if class_names is not None else classes(model),
        "config": config,
        "metrics": metrics,
        "cost": [float(c) for c in cost],
        "history": list(history or ()),
        "data": {
            "source": data_source or dict(modelfile.MNIST_SOURCE),
            "class_names": list(class_names) if class_names is not None else classes(model),
        },
    }
    metadata.update({key: _json(key, values[key]) for key in JSON})
    return _safetensors().save(tensors, metadata=metadata)


def save(path, model, normalization, **companions):
    """Write the safetensors model file atomically, after reading it back with ``parse``'s
    checks (so a file that could not be loaded is never written). ``companions``: the
    keywords of ``to_bytes`` (cost, config, metrics, history, data_source, class_names)."""
    name = os.fspath(path)
    try:
        data = to_bytes(model, normalization, **companions)
        parse(data)
    except (modelfile.ModelFileError, modelfile._Problem, ExportError) as exc:
        raise modelfile.ModelFileError(f"{name}: cannot save: {exc}") from None
    try:
        with modelfile.atomic_write(name) as f:
            f.write(data)
    except OSError as exc:
        raise modelfile.ModelFileError(f"{name}: cannot write: {exc.strerror or exc}") from None


def load(path, data):
    """The ``modelfile.ModelFile`` in ``data``, the bytes of the safetensors file ``path``."""
    try:
        return parse(data)
    except (modelfile.ModelFileError, modelfile._Problem, ExportError) as exc:
        raise modelfile.ModelFileError(f"{os.fspath(path)}: {exc}") from None


def _header(data):
    """The file's JSON header, with the truncations and corruptions named plainly."""
    problem = modelfile._Problem
    if len(data) < 8:
        raise problem(f"truncated safetensors file ({len(data)} bytes, not even a header)")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise problem(
            f"truncated or corrupt safetensors file (a {size:,}-byte header announced, "
            f"{len(data) - 8:,} bytes follow)"
        )
    try:
        header = json.loads(data[8 : 8 + size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise problem(f"corrupt safetensors header (not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise problem("corrupt safetensors header (not a JSON object)")
    ends = [
        t["data_offsets"][1]
        for k, t in header.items()
        if k != "__metadata__" and isinstance(t, dict) and len(t.get("data_offsets", ())) == 2
    ]
    if ends and isinstance(max(ends), int) and 8 + size + max(ends) > len(data):
        raise problem(
            f"truncated safetensors file (its tensors end at byte {8 + size + max(ends):,}, "
            f"the file has {len(data):,})"
        )
    return header


def _metadata(header):
    problem = modelfile._Problem
    meta = header.get("__metadata__")
    if not isinstance(meta, dict):
        raise problem("a safetensors file without numpycnn metadata (no '__metadata__')")
    if meta.get("format") != modelfile.FORMAT:
        raise problem(f"not a numpycnn model file (metadata format {meta.get('format')!r})")
    if meta.get("version") != str(VERSION):
        raise problem(
            f"unsupported model file version {meta.get('version')!r} "
            f"(this numpycnn reads safetensors version {VERSION})"
        )
    missing = [key for key in PLAIN + JSON if key not in meta and key not in OPTIONAL]
    if missing:
        raise problem(f"metadata: missing key{'s' * (len(missing) > 1)} {', '.join(missing)}")
    stored = {key: meta[key] for key in PLAIN}
    for key in JSON:
        if key not in meta:
            continue
        try:
            stored[key] = json.loads(meta[key])
        except (TypeError, ValueError) as exc:
            raise problem(f"metadata {key!r}: not valid JSON ({exc})") from None
    return stored


def parse(data):
    """The ``ModelFile`` in the bytes of a safetensors model file. Raises
    ``modelfile._Problem`` naming the key, tensor or layer at fault."""
    problem = modelfile._Problem
    stored = _metadata(_header(data))
    # the network is checked against the file's size before anything is built or loaded
    try:
        model = modelfile.build_network(stored, len(data))
    except problem as exc:
        raise problem(f"metadata: {exc}") from None
    st = _safetensors()
    try:
        tensors = st.load(bytes(data))
    except Exception as exc:  # safetensors.SafetensorError, or anything a corrupt file causes
        raise problem(f"corrupt safetensors file ({exc})") from None
    left = dict(tensors)
    for i, layer in enumerate(model.layers):
        for param, target, dtype in _tensors(layer):
            key = tensor_name(i, param)
            if key not in left:
                raise problem(f"missing tensor {key!r} (layer {i}, {layer.kind})")
            value = left.pop(key)
            shape = _stored_shape(layer, param, target)
            if value.shape != shape:
                raise problem(
                    f"tensor {key!r} has shape {value.shape}; layer {i} ({layer.kind}) "
                    f"needs {shape}"
                )
            if value.dtype != dtype:
                which = "int64" if dtype == np.int64 else f"the model's dtype is {model.dtype}"
                raise problem(f"tensor {key!r} is {value.dtype}; {which}")
            target[...] = value.reshape(target.shape)
    if left:
        raise problem(f"unexpected tensor {sorted(left)[0]!r} (no layer of the network has it)")
    stored.update(version=VERSION, params=model.get_params(), state=model.state())
    stored.pop("classes")
    return modelfile._model_file(stored, len(data))
