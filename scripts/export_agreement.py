"""How closely the exported models agree with numpycnn on the 10,000 MNIST test images.

For each model file given (a .pkl, .safetensors or 2018 reference pickle), exports it to
ONNX and to a PyTorch state_dict in a temporary folder, runs the 10,000 test images through
onnxruntime and through PyTorch (normalised as the README says, softmax for
softmax_cross_entropy models), and prints per runtime the largest probability difference
from numpycnn's ``predict_proba`` and the number of images given the same class.

    python scripts/export_agreement.py default.pkl ../shared/reference/escontrela-params.pkl
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import numpycnn
from numpycnn import data
from numpycnn.export import export


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--mnist", type=Path, default=Path("data/mnist"))
    args = parser.parse_args()
    import onnxruntime
    import torch

    images = data.read_idx(args.mnist / data.TEST_IMAGES)
    for path in args.models:
        model = numpycnn.load(path)
        expected = model.predict_proba(images, threads=2)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path, torch_path = Path(tmp) / "m.onnx", Path(tmp) / "m.pt"
            export(path, onnx_path)
            export(path, torch_path)
            session = onnxruntime.InferenceSession(str(onnx_path))
            got_onnx = session.run(None, {"pixels": images[:, None].astype(np.float32)})[0]
            net = numpycnn.to_torch(model)
            net.load_state_dict(torch.load(torch_path, weights_only=True))
        x = torch.from_numpy(model.normalization.norm(images)).to(net[0].weight.dtype)
        with torch.no_grad():
            got_torch = net(x)
        if model.network.loss.kind == "softmax_cross_entropy":
            got_torch = torch.softmax(got_torch, dim=1)
        for name, got in (("onnxruntime", got_onnx), ("torch", got_torch.numpy())):
            diff = float(np.abs(got - expected).max())
            same = int((got.argmax(1) == expected.argmax(1)).sum())
            print(f"{path} {name}: max |p - p_numpycnn| {diff:.2e}, same class {same:,}/10,000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
