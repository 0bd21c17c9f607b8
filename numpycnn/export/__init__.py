"""Models that leave numpycnn: ONNX graphs, PyTorch state_dicts and safetensors files.

``export(model, out, format=None)`` writes one file atomically (``numpycnn export`` is a
thin shell over it); the format comes from ``format`` or ``out``'s extension. One module per
format: ``onnx_graph`` (``to_onnx``), ``torch_modules`` (``to_torch``, ``from_torch``) and
``safetensors_file`` (numpycnn's own safe model file, which ``numpycnn.load`` reads too).
onnx and torch are optional and imported on first use; safetensors is a dependency.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from .common import ExportError, classes, output_meaning, parts_of, pixels_text

#: format -> the extensions that imply it
FORMATS = {"onnx": (".onnx",), "torch": (".pt", ".pth"), "safetensors": (".safetensors",)}


def format_for(out, format=None):
    """The format to write ``out`` in: ``format`` if given, else the one of its extension."""
    if format is not None:
        if format not in FORMATS:
            raise ExportError(f"unknown format {format!r} (known: {', '.join(FORMATS)})")
        return format
    suffix = Path(out).suffix.lower()
    for name, suffixes in FORMATS.items():
        if suffix in suffixes:
            return name
    known = ", ".join(s for suffixes in FORMATS.values() for s in suffixes)
    raise ExportError(
        f"{os.fspath(out)}: unknown extension {suffix or '(none)'!r} (use {known}, or give "
        "--format)"
    )


@dataclass
class Exported:
    """What ``export`` wrote: the file, its format, and how to use it (``details``: input
    and output names and shapes, normalisation, classes; ``torch_source`` for torch)."""

    path: Path
    format: str
    details: dict = field(default_factory=dict)


def _same_file(a, b):
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def export(model, out, format=None):
    """Write ``model`` (a model file path, ``ModelFile`` or ``numpycnn.Model``) to ``out`` in
    ``format`` (onnx, torch, safetensors; default: from ``out``'s extension). The file is
    written under a temporary name and renamed, so ``out`` is never half-written; it is
    built and checked in full first. Returns an ``Exported``."""
    from ..modelfile import _Problem, atomic_write

    fmt = format_for(out, format)
    if isinstance(model, str | os.PathLike) and _same_file(model, out):
        raise ExportError(f"{os.fspath(out)}: is the model file itself; choose another name")
    parts = parts_of(model)
    net, norm = parts.network, parts.normalization
    details = {
        "input": {"shape": ["N", *net.input_shape], "pixels": pixels_text(parts)},
        "output": {"shape": ["N", *net.output_shape], "meaning": output_meaning(net)},
        "normalization": norm,
        "classes": classes(parts),
    }
    if fmt == "onnx":
        from . import onnx_graph

        data = onnx_graph.to_bytes(parts)
        details.update(opset=onnx_graph.OPSET, input_name=onnx_graph.INPUT,
                       output_name=onnx_graph.OUTPUT)  # fmt: skip
    elif fmt == "torch":
        from . import torch_modules

        data = torch_modules.to_bytes(parts)
        details["torch_source"] = torch_modules.torch_source(parts)
        details["input"]["pixels"] = "normalised: (pixels - mean) / std"
        details["output"]["meaning"] = (
            "logits (apply softmax for probabilities)"
            if torch_modules.output_function(net, "export") == "softmax"
            else details["output"]["meaning"]
        )
    else:
        from . import safetensors_file

        try:
            data = safetensors_file.to_bytes(
                net,
                norm,
                parts.cost,
                parts.config,
                parts.metrics,
                parts.history,
                parts.data_source,
                parts.class_names,
            )
            safetensors_file.parse(data)
        except (ValueError, _Problem) as exc:
            raise ExportError(f"{os.fspath(out)}: cannot export: {exc}") from None
    try:
        with atomic_write(out) as f:
            f.write(data)
    except OSError as exc:
        raise ExportError(f"{os.fspath(out)}: cannot write: {exc.strerror or exc}") from None
    return Exported(Path(out), fmt, details)


def to_onnx(model):
    """The ``onnx.ModelProto`` of ``model`` (see ``onnx_graph``)."""
    from .onnx_graph import to_onnx

    return to_onnx(model)


def to_torch(model):
    """The ``torch.nn.Sequential`` of ``model`` (see ``torch_modules``)."""
    from .torch_modules import to_torch

    return to_torch(model)


def from_torch(module, normalization, **kwargs):
    """A ``numpycnn.Model`` from a ``torch.nn.Sequential`` (see ``torch_modules``)."""
    from .torch_modules import from_torch

    return from_torch(module, normalization, **kwargs)


__all__ = [
    "ExportError",
    "Exported",
    "FORMATS",
    "export",
    "format_for",
    "from_torch",
    "to_onnx",
    "to_torch",
]
