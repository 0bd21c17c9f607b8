"""The data a command works on: a config's or a model file's source, loaded with progress
and warnings, and the checks that it is the data the model expects.

``datasets.load`` loads a source description; this module adds what ``train``, ``eval``
and the inspector share around it: MNIST's default mirrors meaning "the defaults" for any
set, the warnings handed to a callback (the library never prints), a model's own test set
(``model_test_set``), a ``--data NAME|DIR`` choice turned into a source
(``source_for_choice``), and the checks that a resumed run or an evaluation reads the data
the model was trained on (``check_same_data``, ``check_fits``, ``changed_note``).
"""

from pathlib import Path

from . import datasets
from .data import DEFAULT_MIRRORS, resolve_data_dir, resolve_mirrors

__all__ = [
    "changed_note",
    "check_fits",
    "check_same_data",
    "describe_source",
    "load_data",
    "model_test_set",
    "source_for_choice",
]

#: What makes two data sources the same data: a folder's fingerprint changes with its files.
SAME_DATA_KEYS = (
    "dataset",
    "path",
    "input_shape",
    "resize",
    "test_fraction",
    "seed",
    "fingerprint",
)


def load_data(
    source,
    data_dir,
    mirrors=None,
    progress=None,
    decode_progress=None,
    on_warning=None,
    test_only=False,
):
    """``datasets.load`` with progress factories (``progress`` for downloads in bytes,
    ``decode_progress`` for decoding a folder), each of the data's warnings handed to
    ``on_warning(text)``. ``mirrors``: None or empty for the set's own defaults (MNIST's
    default mirrors, which ``data.resolve_mirrors`` gives when none is set, mean the
    defaults of whichever set is loaded); ``test_only``: see ``datasets.load``."""
    mirrors = list(mirrors or ())
    name = source if isinstance(source, str) else source.get("dataset")
    if name != "mnist" and mirrors == list(DEFAULT_MIRRORS):
        mirrors = []
    ds = datasets.load(
        source,
        data_dir,
        mirrors or None,
        progress=progress,
        decode_progress=decode_progress,
        test_only=test_only,
    )
    for warning in ds.warnings:
        if on_warning is not None:
            on_warning(warning)
    return ds


def describe_source(source):
    """'mnist', "data folder 'pets'": a source description in a few words."""
    if isinstance(source, str):
        return source
    if source.get("dataset") == "folder":
        return f"data folder {source.get('path')!r}"
    return str(source.get("dataset"))


def check_same_data(started, now, path):
    """ValueError unless the source ``now`` is the data the run at ``path`` started on."""
    a = {k: started.get(k) for k in SAME_DATA_KEYS}
    b = {k: now.get(k) for k in SAME_DATA_KEYS}
    if a != b:
        differ = [k for k in SAME_DATA_KEYS if a[k] != b[k]]
        what = "its files changed" if differ == ["fingerprint"] else f"{differ[0]} {b[differ[0]]!r}"
        raise ValueError(
            f"{path}: the run started on {describe_source(started)}, not on this data "
            f"({what}); a resumed run must train on the data it started with"
        )


def source_for_choice(choice, model_source, input_shape):
    """The source that ``--data CHOICE`` names for a model trained on ``model_source`` with
    input ``input_shape``: a data set's name, or a folder (read at the model's input shape,
    with its resize, split fraction and seed when it was trained on a folder). ValueError
    when it is neither."""
    if choice in datasets.SOURCES and choice != "folder":
        return choice
    path = Path(choice).expanduser()
    if not path.exists():
        try:
            datasets.get(choice)
        except ValueError as exc:
            raise ValueError(f"--data: {exc}, nor a folder {choice!r}") from None
    own = model_source if model_source.get("dataset") == "folder" else {}
    source = {"dataset": "folder", "path": str(path), "input_shape": list(input_shape)}
    for key in ("resize", "test_fraction", "seed"):
        if key in own:
            source[key] = own[key]
    return source


def model_test_set(
    model_file, data=None, data_dir=None, mirrors=(), progress=None, decode_progress=None,
    on_warning=None,
):  # fmt: skip
    """(dataset, note) for evaluating ``model_file`` (a ``ModelFile`` or an ``api.Model``):
    the test split of the data it was trained on (its ``data_source``), or of ``data``
    (a ``--data`` choice: a data set's name or a folder). The data directory and mirrors
    are resolved as the commands do (``data_dir``/``mirrors`` given, then the
    environment, then the model's config). ``note`` is None, or one line to show when a
    folder's files changed since training (``changed_note``). Raises ValueError when the
    data does not fit the model (``check_fits``)."""
    cfg = (model_file.config or {}).get("data", {})
    data_dir = resolve_data_dir(data_dir, cfg.get("data_dir"))
    mirrors = resolve_mirrors(mirrors or (), cfg.get("mirrors", ()))
    saved = dict(model_file.data_source)
    input_shape = model_file_input_shape(model_file)
    source = saved if data is None else source_for_choice(data, saved, input_shape)
    ds = load_data(source, data_dir, mirrors, progress, decode_progress, on_warning, test_only=True)
    check_fits(ds, model_file.class_names, input_shape)
    return ds, changed_note(saved, ds.source) if data is None else None


def model_file_input_shape(model_file):
    """The (C, H, W) a ``ModelFile``'s or an ``api.Model``'s network takes."""
    network = model_file.model if hasattr(model_file, "model") else model_file.network
    return tuple(network.input_shape)


def check_fits(ds, class_names, input_shape):
    """ValueError, one line, unless data set ``ds`` gives the model's input shape and as
    many classes as the model has outputs."""
    where = describe_source(ds.source)
    if tuple(ds.input_shape) != tuple(input_shape):
        shape = "x".join(map(str, input_shape))
        raise ValueError(
            f"{where} has {'x'.join(map(str, ds.input_shape))} images, the model takes {shape}"
        )
    if ds.num_classes != len(class_names):
        raise ValueError(
            f"{where} has {ds.num_classes} classes, the model {len(class_names)} "
            f"({', '.join(class_names[:5])}{', ...' if len(class_names) > 5 else ''})"
        )


def changed_note(saved, loaded):
    """One line when a folder's files changed since the model was trained on it: the
    test split may then hold images it was trained on (with train/ and test/ it cannot)."""
    if saved.get("dataset") != "folder" or "fingerprint" not in saved:
        return None
    if saved.get("fingerprint") == loaded.get("fingerprint"):
        return None
    overlap = (
        "" if loaded.get("layout") == "split" else ": its test split may differ and hold "
        "images the model was trained on"
    )  # fmt: skip
    return f"{describe_source(saved)} changed since the model was trained{overlap}"
