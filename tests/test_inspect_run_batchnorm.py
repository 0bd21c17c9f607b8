"""A run folder of a colour batch-norm model on the timeline: each snapshot restores batch
norm's running statistics with the parameters (the last one is the final model exactly),
and a run whose last.pkl is not written yet shows its data's class names, from the
snapshots."""

import numpy as np
from test_colour_batchnorm import COLOURS, trained  # noqa: F401  (the fixture)

from numpycnn import runlog
from numpycnn.inspector import Inspector
from numpycnn.inspector.run import RunView
from numpycnn.modelfile import load_model


def test_snapshots_keep_running_statistics_and_class_names(trained, tmp_path):  # noqa: F811
    folder = tmp_path / "runs" / "swatches"
    final = Inspector(load_model(trained))
    rng = np.random.default_rng(3)
    navy = np.reshape(COLOURS["navy"], (3, 1, 1))
    image = np.clip(rng.normal(navy, 20, (3, 12, 12)), 0, 255).astype(np.uint8)
    expected = final.trace(image).probabilities

    view = RunView.open(folder, name="swatches")
    latest, step = view.inspector()
    assert step == runlog.list_snapshots(folder)[-1].step
    np.testing.assert_array_equal(latest.trace(image).probabilities, expected)
    # the timeline's scratch network, snapshot after snapshot, restores the statistics too
    (_, last), *_ = [(s, ins) for s, ins in view._each() if s.step == step]
    np.testing.assert_array_equal(last.trace(image).probabilities, expected)
    first, _ = view.inspector(0)
    assert not np.allclose(first.trace(image).probabilities, expected)

    # a run that has written snapshots but no model file yet: names from the snapshots
    for name in ("last.pkl", "best.pkl"):
        (folder / name).unlink(missing_ok=True)
    early = RunView.open(folder, name="swatches")
    assert early.base.class_names == sorted(COLOURS)
    assert runlog.load_snapshot(folder, step).class_names == sorted(COLOURS)
    np.testing.assert_array_equal(early.inspector()[0].trace(image).probabilities, expected)
