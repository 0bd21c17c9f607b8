"""``numpycnn export``: a model file as ONNX, a PyTorch state_dict or safetensors."""

import json
from pathlib import Path

import click

from numpycnn.export import FORMATS, export
from numpycnn.export.common import stat_text

from .options import reports_errors


def _summary(result):
    """The human-readable lines: what was written and how to feed it."""
    d, norm = result.details, result.details["normalization"]
    shape = lambda s: "(" + ", ".join(map(str, s)) + ")"  # noqa: E731
    lines = [f"exported {result.path} ({result.format})"]
    if result.format == "onnx":
        lines.append(
            f"input '{d['input_name']}': float32 {shape(d['input']['shape'])}, raw pixels 0-255 "
            f"(the graph normalises them); output '{d['output_name']}': "
            f"{shape(d['output']['shape'])}, {d['output']['meaning']}; opset {d['opset']}"
        )
    elif result.format == "torch":
        lines += [
            f"a state_dict; normalise the pixels first: (x - {stat_text(norm['mean'])}) / "
            f"{stat_text(norm['std'])}; "
            f"output {shape(d['output']['shape'])}: {d['output']['meaning']}",
            "load it into (torch.nn as nn):",
            d["torch_source"],
        ]
    else:
        lines.append("numpycnn eval, predict, inspect and numpycnn.load read it like a .pkl")
    return "\n".join(lines)


@click.command("export")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    help="Default: from OUT's extension (.onnx; .pt or .pth: torch; .safetensors).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@reports_errors
def export_command(model, out, fmt, as_json):
    """Write MODEL in a format other tools run.

    MODEL is a model file from `numpycnn train` (.pkl or .safetensors) or a 2018 reference
    pickle. OUT is written whole or not at all.

    \b
    onnx         an ONNX graph (opset 17): raw 0-255 pixels in, normalised by its first
                 nodes; class probabilities out (needs pip install 'numpycnn[onnx]')
    torch        the state_dict of the torch.nn.Sequential of the same layers; the
                 pixels are normalised by the caller (needs PyTorch)
    safetensors  weights, layers, normalisation, config and metrics; loads in numpycnn
                 like a .pkl, and no reader can be made to run code by it

    \b
    Examples:
      numpycnn export default.pkl model.onnx
      numpycnn export default.pkl weights.pt
      numpycnn export default.pkl model.safetensors
    """
    result = export(model, out, fmt)
    if as_json:
        click.echo(
            json.dumps({"path": str(result.path), "format": result.format, **result.details})
        )
    else:
        click.echo(_summary(result))
