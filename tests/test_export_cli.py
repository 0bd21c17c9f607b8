"""``numpycnn export``: each format from the extension or --format, what it prints, and the
bad input: unknown extension or format, missing or corrupt model, the model itself as OUT,
a missing folder, a missing optional package; OUT is never half-written or lost."""

import json
import sys

import pytest
from cli_helpers import error_line, invoke, last_json
from test_export_common import every_layer_model

import numpycnn
from numpycnn.modelfile import load_model, save_model


@pytest.fixture
def model_file(tmp_path):
    model = every_layer_model()
    path = tmp_path / "model.pkl"
    save_model(path, model.network, model.normalization, metrics={"test_accuracy": 0.1})
    return path


def test_safetensors(model_file, tmp_path):
    out = tmp_path / "model.safetensors"
    result = invoke("export", model_file, out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"exported {out} (safetensors)"
    assert load_model(out).metrics == {"test_accuracy": 0.1}


def test_onnx(model_file, tmp_path):
    pytest.importorskip("onnx", reason="onnx not installed")
    out = tmp_path / "model.onnx"
    result = invoke("export", model_file, out)
    assert result.exit_code == 0, result.output
    first, second = result.stdout.splitlines()
    assert first == f"exported {out} (onnx)"
    assert second.startswith("input 'pixels': float32 (N, 1, 28, 28), raw pixels 0-255")
    assert out.read_bytes() == numpycnn.export.to_onnx(model_file).SerializeToString()


@pytest.mark.parametrize(
    "name, args", [("w.pt", ()), ("w.pth", ()), ("w.bin", ("--format", "torch"))]
)
def test_torch(model_file, tmp_path, name, args):
    torch = pytest.importorskip("torch", reason="PyTorch not installed")
    out = tmp_path / name
    result = invoke("export", model_file, out, *args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"exported {out} (torch)"
    assert "normalise the pixels first: (x - 33.3184) / 78.5675" in lines[1]
    source = "\n".join(lines[3:])
    net = eval(source, {"nn": torch.nn})  # what it prints builds the network the file fits
    net.load_state_dict(torch.load(out, weights_only=True))


def test_json(model_file, tmp_path):
    out = tmp_path / "m.safetensors"
    doc = last_json(invoke("export", model_file, out, "--json"))
    assert doc["path"] == str(out) and doc["format"] == "safetensors"
    assert doc["input"]["shape"] == ["N", 1, 28, 28] and doc["output"]["shape"] == ["N", 10]
    assert doc["classes"] == [str(d) for d in range(10)]
    assert doc["normalization"]["strategy"] == "standard"
    json.dumps(doc)


def test_unknown_extension(model_file, tmp_path):
    line = error_line(invoke("export", model_file, tmp_path / "m.h5"))
    assert line == f"{tmp_path / 'm.h5'}: unknown extension '.h5' (use .onnx, .pt, .pth, " \
        ".safetensors, or give --format)"  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pkl"]


def test_unknown_format(model_file, tmp_path):
    line = error_line(invoke("export", model_file, tmp_path / "m.onnx", "--format", "keras"), 2)
    assert "'keras' is not one of 'onnx', 'torch', 'safetensors'" in line


def test_missing_and_corrupt_models(tmp_path):
    line = error_line(invoke("export", tmp_path / "nope.pkl", tmp_path / "m.safetensors"))
    assert line == f"{tmp_path / 'nope.pkl'}: no such file"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    line = error_line(invoke("export", bad, tmp_path / "m.onnx"))
    assert line.startswith(f"{bad}: truncated or corrupt safetensors file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


def test_the_model_itself_is_never_overwritten(model_file):
    before = model_file.read_bytes()
    line = error_line(invoke("export", model_file, model_file, "--format", "safetensors"))
    assert line == f"{model_file}: is the model file itself; choose another name"
    assert model_file.read_bytes() == before


def test_missing_folder(model_file, tmp_path):
    out = tmp_path / "no" / "m.safetensors"
    line = error_line(invoke("export", model_file, out))
    assert line == f"{out}: cannot write: No such file or directory"


def test_a_failed_export_keeps_the_old_file(model_file, tmp_path, monkeypatch):
    """A missing package (or any failure) leaves an existing OUT as it was, and no
    temporary file behind."""
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    monkeypatch.setitem(sys.modules, "onnx", None)
    line = error_line(invoke("export", model_file, out))
    assert line == "ONNX export needs the onnx package: pip install 'numpycnn[onnx]'"
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "model.pkl"]


def test_in_the_command_list():
    result = invoke("--help")
    assert "export" in result.stdout
    assert "safetensors" in invoke("export", "--help").stdout
