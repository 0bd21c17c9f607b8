"""The training loop: shuffled mini-batches, per-epoch validation, exact resumption.

The loop is a small class so that its whole position (epoch, next batch, the epoch's
shuffle, the generator's state, the optimiser's moments, the cost history) can be saved
between any two batches and restored to continue exactly as an uninterrupted run would.
The learning rate and the augmentation of each step are functions of the step number (and
the seed) alone, so they need no saved state. It never prints: the caller watches through
``on_batch`` and ``on_epoch`` callbacks and can ask it to stop between batches with
``should_stop``.
"""

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import parallel, schedules
from .augment import Augmentation, step_rng
from .data import Normalization, split_train
from .engine import Sequential, optim
from .engine.inference import Plan
from .engine.model import build_layer, infer_shapes


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the parameters are those before that batch."""


@dataclass
class EpochStats:
    """One epoch's figures. ``layers`` maps a layer label (``"3-conv2d"``: position from 1
    and kind) to its telemetry: ``weight_norm`` and ``grad_norm`` (L2 norms of the weights
    and of their gradient on the epoch's last batch) for layers with weights, and
    ``dead_fraction`` for ReLU layers (the fraction of its units that no image of the
    epoch's last batch activates, at the epoch's final parameters)."""

    epoch: int  # 1-based
    train_loss: float  # mean batch cost over the epoch
    train_accuracy: float  # running accuracy over the epoch's batches
    val_accuracy: float | None
    seconds: float  # training time, validation excluded
    val_loss: float | None = None
    lr: float | None = None  # the rate of the epoch's last step
    images_per_second: float | None = None
    layers: dict = field(default_factory=dict)


class InProcessSteps:
    """The batch gradients computed in this process: ``step(idx, aug)`` gathers the images
    ``idx`` (moved by the augmentation parameters ``aug``), runs forward, loss and backward,
    leaves the gradient of the batch's mean loss in ``model.flat_grads`` and returns
    (mean loss, correct predictions). A worker pool offers the same method."""

    def __init__(self, model, x, y, augment=None, normalize=None):
        self.model, self.x, self.y, self.augment = model, x, y, augment
        self.normalize = normalize

    def images(self, idx, aug=None):
        xb = self.x[idx]
        if self.normalize is not None:
            xb = self.normalize(xb)
        return xb if aug is None else self.augment.apply(xb, aug)

    def step(self, idx, aug=None):
        yb = self.y[idx]
        with self.model.mode(True):  # batch statistics, dropout (Sequential.train)
            loss, out = self.model.loss_on(self.images(idx, aug), yb)
            if math.isfinite(loss):  # a diverged batch is refused by the caller, unapplied
                self.model.backward()
        return loss, int((out.argmax(axis=1) == yb).sum())


#: Images per forward pass of the telemetry: its working arrays stay about 30 MB whatever
#: the batch size (a whole batch of 20,000 took 5 GB; chunks of 256, 120 MB).
TELEMETRY_CHUNK = 64


class BatchImages:
    """The images of one batch, gathered (and augmented) a slice at a time, so that a large
    batch is never held whole: ``len()`` and slicing, like the array it stands for."""

    def __init__(self, steps, idx, aug=None):
        self.steps, self.idx, self.aug = steps, idx, aug

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, part):
        return self.steps.images(self.idx[part], None if self.aug is None else self.aug[part])


def layer_telemetry(model, images, chunk_size=TELEMETRY_CHUNK):
    """Per-layer weight and gradient norms, and the dead fraction of each ReLU layer on
    ``images`` (an array, or ``BatchImages``; forward passes at the current parameters,
    ``chunk_size`` images at a time); see ``EpochStats.layers``."""
    # a unit is one position of one channel (or one dense unit): dead when no image of
    # the batch makes it positive, i.e. when no chunk does
    alive = {}
    for start in range(0, len(images), chunk_size):
        model.forward(images[start : start + chunk_size])
        for i, layer in enumerate(model.layers):
            if layer.kind == "relu":
                active = layer._active.any(axis=0)
                alive[i] = active if i not in alive else alive[i] | active
    stats = {}
    for i, layer in enumerate(model.layers):
        entry = {}
        if "weight" in layer.params:
            entry["weight_norm"] = float(np.linalg.norm(layer.params["weight"]))
            entry["grad_norm"] = float(np.linalg.norm(layer.grads["weight"]))
        if layer.kind == "relu" and i in alive:
            entry["dead_fraction"] = float(1.0 - alive[i].mean())
        if entry:
            stats[f"{i + 1}-{layer.kind}"] = entry
    return stats


def score(model, x, y, batch_size=32):
    """(mean loss, accuracy) of ``model`` on images ``x`` with labels ``y``, in evaluation
    mode, through the prediction plan (``engine.inference``: no backward caches, the
    blocks small enough to stay in cache): validation at the end of every epoch."""
    total, correct = 0.0, 0
    with model.mode(False):
        plan = Plan(model.layers)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            out = plan(model._as_input(xb))
            total += model.loss.forward(out, yb) * len(yb)
            correct += int((out.argmax(axis=1) == yb).sum())
    return total / len(x), correct / len(x)


class Trainer:
    """Trains ``model`` with ``optimizer`` on (``x``, ``y``) for ``epochs`` epochs.

    ``x`` is the normalised training images (N, C, H, W) and ``y`` their labels; each epoch
    visits them in a fresh random order drawn from a generator seeded with ``seed``, in
    batches of ``batch_size`` (the last one may be smaller). ``val`` is an optional
    (images, labels) pair scored after every epoch. Step k (from 0, over the whole run) uses
    the rate ``schedule.lr(k, optimizer.lr, ...)`` (default: ``optimizer.lr *
    lr_decay**epoch``). ``augment`` (an ``Augmentation``) moves each training image by
    parameters drawn from ``augment.step_rng(seed, k)``. With ``normalize`` (a callable,
    ``Normalization.norm``), ``x`` is the raw uint8 pixels, normalised a batch at a time:
    a quarter of the memory of float32 images (CIFAR-10's 45,000 training images: 138 MB
    instead of 553 MB), with the same values, so the same training to the bit. The batch
    gradients are computed in this process (``InProcessSteps``) unless ``use_pool`` hands
    them to a worker pool.
    """

    def __init__(
        self,
        model,
        optimizer,
        x,
        y,
        *,
        epochs,
        batch_size,
        seed=0,
        val=None,
        lr_decay=1.0,
        schedule=None,
        augment=None,
        normalize=None,
    ):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise ValueError("no training images")
        self.model, self.optimizer = model, optimizer
        self.x, self.y = x, np.asarray(y)
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.seed = int(seed)
        self.val = val
        self.base_lr = optimizer.lr
        self.schedule = schedules.Exponential(lr_decay) if schedule is None else schedule
        self.augment = augment if augment is not None and augment.active else None
        self.normalize = normalize
        self.local = self.steps = InProcessSteps(model, self.x, self.y, self.augment, normalize)
        self.rng = np.random.default_rng(seed)
        self.epoch = 0  # epochs completed
        self.batch = 0  # next batch within the current epoch
        self.order = None  # the current epoch's shuffle
        self.cost = []  # mean loss of every batch so far
        self.history = []  # EpochStats of the completed epochs
        self._epoch_loss = self._epoch_correct = self._epoch_seen = 0
        self._epoch_seconds = 0.0

    def use_pool(self, pool):
        """Compute the batch gradients on ``pool``, a ``parallel.WorkerPool`` built on this
        trainer's images, labels and augmentation, and read its shared copies of them from
        now on (so the data set is not held twice)."""
        self.x, self.y = pool.images, pool.labels
        self.local = InProcessSteps(self.model, self.x, self.y, self.augment, self.normalize)
        self.steps = pool

    @property
    def batches_per_epoch(self):
        return math.ceil(len(self.x) / self.batch_size)

    @property
    def total_steps(self):
        return self.epochs * self.batches_per_epoch

    @property
    def finished(self):
        return self.epoch >= self.epochs

    def lr_at(self, step):
        """The learning rate of step ``step`` (from 0) of this run."""
        return self.schedule.lr(step, self.base_lr, self.batches_per_epoch, self.total_steps)

    def _batch(self, batch):
        """The indices and augmentation parameters of batch ``batch`` of this epoch."""
        bs = self.batch_size
        idx = self.order[batch * bs : (batch + 1) * bs]
        if self.augment is None:
            return idx, None
        step = self.epoch * self.batches_per_epoch + batch
        return idx, self.augment.draw(step_rng(self.seed, step), len(idx))

    def run(self, on_batch=None, on_epoch=None, should_stop=None):
        """Train until done or until ``should_stop()`` is true between two batches.

        ``on_batch(trainer, loss, running_accuracy)`` follows every batch and
        ``on_epoch(trainer, stats)`` every epoch. Returns True when training finished.
        Raises Diverged, leaving the parameters as they were before the bad batch.
        """
        # Overflow on the way to a NaN loss is reported by the finiteness check below, as
        # one clear error, rather than by NumPy warnings.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._run(on_batch, on_epoch, should_stop)

    def _run(self, on_batch, on_epoch, should_stop):
        model = self.model
        while not self.finished:
            if self.order is None:
                self.order = self.rng.permutation(len(self.x))
            started = time.perf_counter()
            while self.batch < self.batches_per_epoch:
                if should_stop is not None and should_stop():
                    self._epoch_seconds += time.perf_counter() - started
                    return False
                step = self.epoch * self.batches_per_epoch + self.batch
                self.optimizer.lr = self.lr_at(step)
                model.set_step(self.seed, step)  # dropout's masks: a function of the step
                idx, aug = self._batch(self.batch)
                loss, correct = self.steps.step(idx, aug)
                if not math.isfinite(loss):
                    raise Diverged(
                        f"the loss became {loss} at epoch {self.epoch + 1}, batch "
                        f"{self.batch + 1}: lower the learning rate"
                    )
                self.optimizer.step(model.flat_params, model.flat_grads)
                self.batch += 1
                self.cost.append(loss)
                self._epoch_loss += loss
                self._epoch_correct += correct
                self._epoch_seen += len(idx)
                if on_batch is not None:
                    on_batch(self, loss, self._epoch_correct / self._epoch_seen)
            self._epoch_seconds += time.perf_counter() - started
            stats = self._finish_epoch()
            if on_epoch is not None:
                on_epoch(self, stats)
        return True

    def _finish_epoch(self):
        val_loss = val_accuracy = None
        if self.val is not None and len(self.val[0]):
            val_loss, val_accuracy = score(self.model, *self.val)
        last = self.batches_per_epoch - 1
        layers = layer_telemetry(self.model, BatchImages(self.local, *self._batch(last)))
        stats = EpochStats(
            epoch=self.epoch + 1,
            train_loss=self._epoch_loss / self.batches_per_epoch,
            train_accuracy=self._epoch_correct / self._epoch_seen,
            val_accuracy=val_accuracy,
            seconds=self._epoch_seconds,
            val_loss=val_loss,
            lr=self.lr_at((self.epoch + 1) * self.batches_per_epoch - 1),
            images_per_second=self._epoch_seen / self._epoch_seconds
            if self._epoch_seconds > 0
            else None,
            layers=layers,
        )
        self.history.append(stats)
        self.epoch += 1
        self.batch = 0
        self.order = None
        self._epoch_loss = self._epoch_correct = self._epoch_seen = 0
        self._epoch_seconds = 0.0
        return stats

    def state_dict(self):
        """Everything besides the parameters needed to resume exactly (plain data)."""
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "seed": self.seed,  # the augmentation stream's
            "order": None if self.order is None else self.order.copy(),
            "rng": self.rng.bit_generator.state,
            "optimizer": {"spec": self.optimizer.spec(), **self.optimizer.state_dict()},
            "cost": list(self.cost),
            "history": [asdict(s) for s in self.history],
            "running": {
                "loss": self._epoch_loss,
                "correct": self._epoch_correct,
                "seen": self._epoch_seen,
                "seconds": self._epoch_seconds,
            },
        }

    def load_state_dict(self, state):
        """Continue from ``state_dict()`` output (the model's parameters are set apart)."""
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.seed = int(state.get("seed", self.seed))  # absent in checkpoints of 0.1.0
        self.order = None if state["order"] is None else np.asarray(state["order"])
        if self.order is not None and len(self.order) != len(self.x):
            raise ValueError(
                f"the checkpoint shuffles {len(self.order)} images but {len(self.x)} are "
                "given: resume with the same data settings"
            )
        self.rng.bit_generator.state = state["rng"]
        opt_state = {k: v for k, v in state["optimizer"].items() if k != "spec"}
        self.optimizer.load_state_dict(opt_state)
        self.cost = [float(c) for c in state["cost"]]
        self.history = [EpochStats(**s) for s in state["history"]]
        running = state["running"]
        self._epoch_loss = float(running["loss"])
        self._epoch_correct = int(running["correct"])
        self._epoch_seen = int(running["seen"])
        self._epoch_seconds = float(running["seconds"])


@dataclass
class Run:
    """A training run set up from a config: what ``prepare`` returns."""

    model: Sequential
    trainer: Trainer
    normalization: Normalization


def augmentation(config, normalization, channels=1):
    """The ``Augmentation`` of ``config.data.augment`` for images of ``channels`` channels
    normalised with ``normalization`` (pixels moved in from outside the image are black,
    per channel), or None."""
    a = config.data.augment
    if a is None:
        return None
    blank = normalization.blank(channels)
    return Augmentation(shift=a.shift, rotate=a.rotate, scale=a.scale, fill=blank, flip=a.flip)


def check_data(config, ds):
    """ValueError, one line naming the key, when ``config`` does not fit the data set
    ``ds`` (a ``datasets.Dataset``): its input shape, class count and training set size."""
    data, where = config.data, _data_name(ds)
    if tuple(ds.input_shape) != tuple(data.shape):
        raise ValueError(f"{where} gives {ds.input_shape} images, the config expects {data.shape}")
    layers = [build_layer(spec) for spec in config.network]
    model_out = infer_shapes(layers, ds.input_shape)[-1][2]
    if tuple(model_out) != (ds.num_classes,):
        last = f"network[{len(layers) - 1}] ({layers[-1].kind})"
        raise ValueError(
            f"network: the last layer, {last}, gives {model_out[-1]} scores, but {where} "
            f"has {ds.num_classes} classes"
        )
    n = len(ds.train_images)
    if data.limit is not None and data.limit + data.validation > n:
        raise ValueError(
            f"data.limit {data.limit} plus data.validation {data.validation} exceeds the "
            f"{n:,} training images of {where}"
        )
    if data.limit is None and data.validation >= n:
        raise ValueError(
            f"data.validation {data.validation} leaves none of the {n:,} training images of "
            f"{where} to train on: lower it"
        )


def _data_name(ds):
    if ds.name == "folder":
        return f"data folder {ds.source.get('path')!r}"
    return f"data set {ds.name}"


def prepare(config, ds, checkpoint=None):
    """Set up training ``config`` (a ``numpycnn.config.Config``) on ``ds``, a
    ``datasets.Dataset`` (uint8 images (N, C, H, W)).

    Checks that the config fits the data (``check_data``), splits and normalises the data
    as the config says (statistics from the training images only) and builds the network
    for the data's input shape, the optimiser and the trainer. With ``checkpoint`` (a
    loaded model file holding one) the run continues from it: its model, normalisation and
    training state replace fresh ones.
    """
    data, t = config.data, config.training
    check_data(config, ds)
    train_x, train_y, val_x, val_y = split_train(
        ds.train_images, ds.train_labels, data.limit, data.validation
    )
    if t.batch_size > len(train_x):  # one short batch per epoch would be a silent surprise
        held = f"data.limit {data.limit}" if data.limit else f"data.validation {data.validation}"
        raise ValueError(
            f"training.batch_size (--batch-size) {t.batch_size:,} is larger than the training "
            f"set ({len(train_x):,} images, with {held}): lower the batch size or train on "
            "more images"
        )
    if checkpoint is None:
        norm = Normalization.fit(data.normalization, train_x)
        model = Sequential(
            config.network, loss=t.loss, init=t.init, dtype=t.dtype, seed=t.seed,
            input_shape=ds.input_shape,
        )  # fmt: skip
    else:
        norm = Normalization.from_dict(checkpoint.normalization)
        model = checkpoint.model
    trainer = Trainer(
        model,
        optim.get(t.optimizer.name, **t.optimizer.hyperparameters),
        train_x,  # uint8, normalised a batch at a time
        train_y,
        epochs=t.epochs,
        batch_size=t.batch_size,
        seed=t.seed,
        val=(norm.norm(val_x), val_y) if len(val_y) else None,
        schedule=t.make_schedule(),
        augment=augmentation(config, norm, ds.input_shape[0]),
        normalize=norm.norm,
    )
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint.checkpoint)
    return Run(model, trainer, norm)


def evaluate(
    model,
    images,
    labels,
    classes=10,
    batch_size=32,
    threads=1,
    workers=1,
    pool=None,
    class_names=None,
):
    """Accuracy, per-class precision and recall, and the confusion matrix.

    confusion[t, p] counts images of true class t predicted as p. ``per_class`` is keyed
    by ``class_names`` (default the class numbers "0", "1", ...: MNIST's digits), listed
    in ``class_names`` too. The predictions are
    shared among the workers of ``pool`` (an open ``parallel.WorkerPool``), else among
    ``workers`` processes, else among ``threads`` threads (``Sequential.predict``).
    """
    labels = np.asarray(labels)
    names = [str(k) for k in range(classes)] if class_names is None else list(class_names)
    if len(names) != classes:
        raise ValueError(f"{len(names)} class names for {classes} classes")
    if pool is not None:
        predicted = pool.predict(images, batch_size)
    else:
        predicted = parallel.predict_proba(model, images, workers, batch_size, threads)
        predicted = predicted.argmax(axis=1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    diag = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, diag / np.maximum(support, 1), np.nan)
        precision = np.where(predicted_count > 0, diag / np.maximum(predicted_count, 1), np.nan)
    return {
        "accuracy": float(diag.sum() / max(len(labels), 1)),
        "correct": int(diag.sum()),
        "total": int(len(labels)),
        "class_names": names,
        "per_class": {
            names[k]: {
                "precision": None if np.isnan(precision[k]) else float(precision[k]),
                "recall": None if np.isnan(recall[k]) else float(recall[k]),
                "support": int(support[k]),
            }
            for k in range(classes)
        },
        "confusion": confusion.tolist(),
    }
