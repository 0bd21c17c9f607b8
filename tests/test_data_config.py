"""The config's data section for every source (#16), per-channel normalisation, and flips
as a fifth augmentation parameter: the pieces train, eval and predict are wired from."""

import numpy as np
import pytest
from PIL import Image

from numpycnn.augment import Augmentation, step_rng
from numpycnn.config import ConfigError, load_config
from numpycnn.data import Normalization
from numpycnn.datasets import Dataset
from numpycnn.training import augmentation, prepare

COLOUR_NET = """
network:
  - {type: conv2d, filters: 4, kernel: 3, padding: 1}
  - {type: relu}
  - {type: maxpool2d, size: 2, stride: 2}
  - {type: flatten}
  - {type: dense, units: UNITS}
"""


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path):
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message
    return message


def class_folders(root, names, files=1):
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(files):
            Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(root / name / f"{i}.png")
    return root


def test_the_default_is_mnist_and_nothing_changes(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.data.dataset == "mnist" and config.data.shape == (1, 28, 28)
    assert config.data.source(seed=3) == "mnist"
    assert config.to_dict()["data"]["dataset"] == "mnist"


def test_a_folder_config_in_yaml_and_ini_is_one_config(tmp_path):
    pets = class_folders(tmp_path / "pets", ["cat", "dog", "owl"])
    network = COLOUR_NET.replace("UNITS", "3")
    yaml_text = network + (
        f"data:\n  dataset: folder\n  path: {pets}\n  input_shape: [3, 8, 8]\n"
        "  test_fraction: 0.25\n  resize: stretch\n  augment: {flip: true, shift: 4}\n"
    )
    ini_text = (
        "[layer.1]\ntype = conv2d\nfilters = 4\nkernel = 3\npadding = 1\n"
        "[layer.2]\ntype = relu\n[layer.3]\ntype = maxpool2d\nsize = 2\nstride = 2\n"
        "[layer.4]\ntype = flatten\n[layer.5]\ntype = dense\nunits = 3\n"
        f"[data]\ndataset = folder\npath = {pets}\ninput_shape = 3, 8, 8\n"
        "test_fraction = 0.25\nresize = stretch\n[augment]\nflip = true\nshift = 4\n"
    )
    a = load_config(write(tmp_path, yaml_text))
    b = load_config(write(tmp_path, ini_text, "c.ini"))
    assert a == b
    assert a.data.shape == (3, 8, 8) and a.data.augment.flip == 0.5
    assert a.data.source(seed=7) == {
        "dataset": "folder",
        "path": str(pets),
        "input_shape": [3, 8, 8],
        "test_fraction": 0.25,
        "resize": "stretch",
        "seed": 7,
    }


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("dataset: fashon-mnist", "data.dataset: unknown dataset 'fashon-mnist' (did you mean"),
        ("dataset: folder", "data.path: dataset folder needs the folder's path"),
        ("dataset: kmnist\n  path: x", "data.path: only for dataset: folder"),
        ("dataset: cifar10\n  input_shape: [3, 28, 28]", "is not cifar10's own shape [3, 32, 32]"),
        ("dataset: kmnist\n  resize: stretch", "data.resize: only for dataset: folder"),
        ("dataset: kmnist\n  test_fraction: 0.3", "data.test_fraction: only for dataset: folder"),
        ("test_fraction: 1.5", "data.test_fraction: expected a number in (0, 1)"),
        ("resize: crop", "data.resize: expected one of fit, stretch"),
        ("dataset: folder\n  path: x\n  input_shape: [2, 8, 8]", "data.input_shape: input_shape"),
        ("dataset: cifar10\n  limit: 50000", "data: limit 50000 plus validation 5000 exceeds"),
        ("dataset: cifar10\n  validation: 50000", "data.validation: expected an integer"),
        ("augment: {flip: 2}", "data.augment.flip: expected a number in [0, 1]"),
        ("augment: {shift: 15}", "data.augment.shift: expected a number in [0, 14]"),
    ],
)
def test_bad_data_keys_are_one_line_naming_the_key(tmp_path, data, fragment):
    message = error_of(write(tmp_path, f"data:\n  {data}\n"))
    assert message.startswith(str(tmp_path / "c.yaml") + ": ")
    assert fragment in message, message


def test_shift_is_bounded_by_half_the_image(tmp_path):
    net = COLOUR_NET.replace("UNITS", "10")
    ok = load_config(write(tmp_path, net + "data: {dataset: cifar10, augment: {shift: 16}}\n"))
    assert ok.data.augment.shift == 16
    message = error_of(write(tmp_path, net + "data: {dataset: cifar10, augment: {shift: 17}}\n"))
    assert "data.augment.shift: expected a number in [0, 16]" in message


def test_the_network_is_checked_on_the_data_and_its_classes(tmp_path):
    pets = class_folders(tmp_path / "pets", ["cat", "dog", "owl"])
    folder = f"data: {{dataset: folder, path: {pets}, input_shape: [3, 8, 8]}}\n"
    # the class folders are counted without reading an image: 3, not the network's 10
    message = error_of(write(tmp_path, COLOUR_NET.replace("UNITS", "10") + folder))
    assert message.endswith(
        "network: the last layer, network[4] (dense), gives shape (10,), but data folder "
        "'pets' has 3 classes"
    )
    # a layer the colour image does not fit is named, with the data's shape
    big = "network:\n  - {type: conv2d, filters: 4, kernel: 9}\n  - {type: flatten}\n"
    big += "  - {type: dense, units: 3}\n"
    message = error_of(write(tmp_path, big + folder))
    assert "network[0] (conv2d)" in message and "3x8x8 image of data folder 'pets'" in message
    # the default network is for 1x28x28: CIFAR-10 needs its own
    message = error_of(write(tmp_path, "data: {dataset: cifar10}\n"))
    assert "the default network takes 1x28x28 images" in message
    # a colour network fits CIFAR-10's shape and ten classes
    cifar = load_config(
        write(tmp_path, COLOUR_NET.replace("UNITS", "10") + "data:\n  dataset: cifar10\n")
    )
    assert cifar.data.shape == (3, 32, 32)


def test_a_missing_folder_is_left_for_the_load_to_name(tmp_path):
    text = COLOUR_NET.replace("UNITS", "4")
    text += f"data: {{dataset: folder, path: {tmp_path / 'nowhere'}, input_shape: [3, 8, 8]}}\n"
    assert load_config(write(tmp_path, text)).data.path == str(tmp_path / "nowhere")


# ----- normalisation -----


def test_colour_normalisation_is_per_channel_as_torchvision_normalize():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 3, 6, 5), dtype=np.uint8)
    images[:, 1] //= 2
    norm = Normalization.fit("standard", images)
    x = images.astype(np.float64)
    np.testing.assert_allclose(norm.mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(norm.std, x.std(axis=(0, 2, 3)), rtol=1e-12)
    out = norm.norm(images)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)
    assert Normalization.from_dict(norm.to_dict()) == norm
    assert isinstance(norm.to_dict()["mean"], list) and len(norm.to_dict()["mean"]) == 3
    np.testing.assert_allclose(
        norm.blank(3), [-m / s for m, s in zip(norm.mean, norm.std)], rtol=1e-6
    )
    with pytest.raises(ValueError, match="for 3 channels, the images have 1"):
        norm.norm(images[:, :1])


def test_grey_and_reference_normalisation_keep_one_number(mnist):
    grey = Normalization.fit("standard", mnist.train_images[:1000, None])
    assert isinstance(grey.mean, float) and grey.to_dict()["mean"] == grey.mean
    assert grey == Normalization.fit("standard", mnist.train_images[:1000])
    colour = np.repeat(mnist.train_images[:100, None], 3, axis=1)
    assert isinstance(Normalization.fit("reference", colour).mean, float)
    assert Normalization.fit("unit", colour) == Normalization("unit", 0.0, 255.0)


# ----- augmentation -----


def test_flips_are_a_fifth_column_drawn_after_the_other_four():
    moves = Augmentation(shift=2, rotate=10, scale=0.1)
    flips = Augmentation(shift=2, rotate=10, scale=0.1, flip=0.5)
    a, b = moves.draw(step_rng(0, 5), 64), flips.draw(step_rng(0, 5), 64)
    assert a.shape == (64, 4) and b.shape == (64, 5)
    np.testing.assert_array_equal(a, b[:, :4])  # runs without flips draw what they drew
    assert 10 < b[:, 4].sum() < 54 and set(np.unique(b[:, 4])) == {0.0, 1.0}
    assert (moves.params_per_image, flips.params_per_image) == (4, 5)


def test_flip_alone_mirrors_and_moves_nothing_else():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    aug = Augmentation(flip=1.0)
    assert aug.active and not aug.moves
    params = aug.draw(step_rng(1, 0), 2)
    np.testing.assert_array_equal(aug.apply(x, params), x[:, :, :, ::-1])
    params[1, 4] = 0.0
    out = aug.apply(x, params)
    np.testing.assert_array_equal(out[1], x[1])


def test_colour_fill_is_per_channel():
    x = np.zeros((1, 3, 6, 6), np.float32)
    aug = Augmentation(shift=3, fill=(1.0, 2.0, 3.0))
    out = aug.apply(x, np.array([[3.0, 0.0, 0.0, 1.0]]))  # three columns come from outside
    np.testing.assert_array_equal(out[0, :, :, 0], np.array([1.0, 2.0, 3.0])[:, None].repeat(6, 1))
    np.testing.assert_array_equal(out[0, :, :, 4], 0)


def colour_dataset(n=40, classes=2, shape=(3, 8, 8)):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return Dataset(
        name="folder",
        train_images=images,
        train_labels=labels.astype(np.int64),
        test_images=images[:10],
        test_labels=labels[:10].astype(np.int64),
        class_names=[f"c{k}" for k in range(classes)],
        source={"dataset": "folder", "path": "made"},
    )


def test_prepare_builds_the_network_for_the_data_and_checks_its_size(tmp_path):
    made = class_folders(tmp_path / "made", ["c0", "c1"])
    text = COLOUR_NET.replace("UNITS", "2")
    text += f"data: {{dataset: folder, path: {made}, input_shape: [3, 8, 8], validation: 8,"
    text += " augment: {flip: true}}\ntraining: {batch_size: 8}\n"
    config = load_config(write(tmp_path, text))
    run = prepare(config, colour_dataset())
    assert run.model.input_shape == (3, 8, 8) and run.normalization.per_channel
    assert run.trainer.x.shape == (32, 3, 8, 8) and run.trainer.augment.flip == 0.5
    assert augmentation(config, run.normalization, 3).fill == run.normalization.blank(3)
    too_many = load_config(write(tmp_path, text.replace("validation: 8", "validation: 40")))
    with pytest.raises(ValueError) as err:
        prepare(too_many, colour_dataset())
    assert str(err.value) == (
        "data.validation 40 leaves none of the 40 training images of data folder 'made' to "
        "train on: lower it"
    )
    limited = load_config(write(tmp_path, text.replace("validation: 8", "limit: 35")))
    with pytest.raises(ValueError, match="data.limit 35 plus data.validation 5000 exceeds the 40"):
        prepare(limited, colour_dataset())
    with pytest.raises(ValueError, match=r"network\[4\] \(dense\), gives 2 scores, but data"):
        prepare(config, colour_dataset(classes=3))


def test_raw_pixels_normalised_per_batch_train_to_the_bit(mnist):
    """uint8 training images normalised a batch (or a worker's share) at a time give the
    very parameters that the whole set normalised up front gives, augmented too."""
    from numpycnn import parallel
    from numpycnn.engine import Sequential, optim
    from numpycnn.training import Trainer

    colour = np.repeat(mnist.train_images[:192, None], 3, axis=1)
    colour[:, 1] //= 3
    labels = mnist.train_labels[:192].astype(np.int64)
    norm = Normalization.fit("standard", colour)
    aug = Augmentation(shift=2, rotate=5, fill=norm.blank(3), flip=0.5)
    net = [{"type": "conv2d", "filters": 3, "kernel": 5, "stride": 3}, {"type": "flatten"}]
    net.append({"type": "dense", "units": 10})

    def trained(x, normalize, workers=1):
        model = Sequential(net, input_shape=(3, 28, 28), seed=1)
        t = Trainer(model, optim.Adam(lr=0.01), x, labels, epochs=1, batch_size=32, seed=2,
                    augment=aug, normalize=normalize)  # fmt: skip
        if workers > 1:
            with parallel.WorkerPool(model, t.x, t.y, workers, augment=aug,
                                     normalize=normalize) as pool:  # fmt: skip
                assert pool.images.dtype == (np.uint8 if normalize else np.float32)
                t.use_pool(pool)
                t.run()
        else:
            t.run()
        return model.flat_params.copy()

    up_front = trained(norm.norm(colour), None)
    np.testing.assert_array_equal(trained(colour, norm.norm), up_front)
    np.testing.assert_array_equal(
        trained(colour, norm.norm, workers=2), trained(norm.norm(colour), None, workers=2)
    )


def test_a_colour_model_with_per_channel_statistics_exports_to_onnx(tmp_path, mnist):
    """The ONNX graph normalises each channel with its own statistics, as numpycnn does."""
    ort = pytest.importorskip("onnxruntime")
    from numpycnn.api import Model
    from numpycnn.engine import Sequential
    from numpycnn.export import export

    colour = np.repeat(mnist.train_images[:64, None], 3, axis=1)
    colour[:, 0] = 255 - colour[:, 0]
    norm = Normalization.fit("standard", colour)
    net = [{"type": "conv2d", "filters": 2, "kernel": 3}, {"type": "flatten"}]
    model = Model(Sequential([*net, {"type": "dense", "units": 10}], input_shape=(3, 28, 28)), norm)
    export(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: colour.astype(np.float32)})[0]
    np.testing.assert_allclose(out, model.predict_proba(colour), atol=1e-5)
