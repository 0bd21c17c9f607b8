"""The training loop: shuffled mini-batches, per-epoch validation, exact resumption.

The loop is a small class so that its whole position (epoch, next batch, the epoch's
shuffle, the generator's state, the optimiser's moments, the cost history) can be saved
between any two batches and restored to continue exactly as an uninterrupted run would.
It never prints: the caller watches through ``on_batch`` and ``on_epoch`` callbacks and
can ask it to stop between batches with ``should_stop``.
"""

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from .data import Normalization, split_train
from .engine import Sequential, optim


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the parameters are those before that batch."""


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float  # mean batch cost over the epoch
    train_accuracy: float  # running accuracy over the epoch's batches
    val_accuracy: float | None
    seconds: float


class Trainer:
    """Trains ``model`` with ``optimizer`` on (``x``, ``y``) for ``epochs`` epochs.

    ``x`` is the normalised training images (N, C, H, W) and ``y`` their labels; each epoch
    visits them in a fresh random order drawn from a generator seeded with ``seed``, in
    batches of ``batch_size`` (the last one may be smaller). ``val`` is an optional
    (images, labels) pair scored after every epoch. Epoch k (from 0) uses the learning rate
    ``optimizer.lr * lr_decay**k``: a function of the epoch alone, so resuming needs no
    schedule state. ``threads`` share the validation predictions (``Sequential.predict``).
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
        threads=1,
    ):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise ValueError("no training images")
        self.model, self.optimizer = model, optimizer
        self.x, self.y = x, np.asarray(y)
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.val = val
        self.threads = int(threads)
        self.base_lr, self.lr_decay = optimizer.lr, float(lr_decay)
        self.rng = np.random.default_rng(seed)
        self.epoch = 0  # epochs completed
        self.batch = 0  # next batch within the current epoch
        self.order = None  # the current epoch's shuffle
        self.cost = []  # mean loss of every batch so far
        self.history = []  # EpochStats of the completed epochs
        self._epoch_loss = self._epoch_correct = self._epoch_seen = 0
        self._epoch_seconds = 0.0

    @property
    def batches_per_epoch(self):
        return math.ceil(len(self.x) / self.batch_size)

    @property
    def finished(self):
        return self.epoch >= self.epochs

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
        model, bs = self.model, self.batch_size
        while not self.finished:
            if self.order is None:
                self.order = self.rng.permutation(len(self.x))
            self.optimizer.lr = self.base_lr * self.lr_decay**self.epoch
            started = time.perf_counter()
            while self.batch < self.batches_per_epoch:
                if should_stop is not None and should_stop():
                    self._epoch_seconds += time.perf_counter() - started
                    return False
                idx = self.order[self.batch * bs : (self.batch + 1) * bs]
                xb, yb = self.x[idx], self.y[idx]
                loss, out = model.loss_on(xb, yb)
                if not math.isfinite(loss):
                    raise Diverged(
                        f"the loss became {loss} at epoch {self.epoch + 1}, batch "
                        f"{self.batch + 1}: lower the learning rate"
                    )
                model.backward()
                self.optimizer.step(model.flat_params, model.flat_grads)
                self.batch += 1
                self.cost.append(loss)
                self._epoch_loss += loss
                self._epoch_correct += int((out.argmax(axis=1) == yb).sum())
                self._epoch_seen += len(yb)
                if on_batch is not None:
                    on_batch(self, loss, self._epoch_correct / self._epoch_seen)
            self._epoch_seconds += time.perf_counter() - started
            stats = self._finish_epoch()
            if on_epoch is not None:
                on_epoch(self, stats)
        return True

    def _finish_epoch(self):
        val_accuracy = None
        if self.val is not None and len(self.val[0]):
            val_accuracy = float(
                (self.model.predict(self.val[0], threads=self.threads) == self.val[1]).mean()
            )
        stats = EpochStats(
            epoch=self.epoch + 1,
            train_loss=self._epoch_loss / self.batches_per_epoch,
            train_accuracy=self._epoch_correct / self._epoch_seen,
            val_accuracy=val_accuracy,
            seconds=self._epoch_seconds,
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


def prepare(config, mnist, checkpoint=None, threads=1):
    """Set up training ``config`` (a ``numpycnn.config.Config``) on ``mnist``.

    Splits and normalises the data as the config says (statistics from the training images
    only) and builds the network, the optimiser and the trainer. With ``checkpoint`` (a
    loaded model file holding one) the run continues from it: its model, normalisation and
    training state replace fresh ones. ``threads`` share validation predictions.
    """
    data, t = config.data, config.training
    train_x, train_y, val_x, val_y = split_train(
        mnist.train_images, mnist.train_labels, data.limit, data.validation
    )
    if checkpoint is None:
        norm = Normalization.fit(data.normalization, train_x)
        model = Sequential(config.network, loss=t.loss, init=t.init, dtype=t.dtype, seed=t.seed)
    else:
        norm = Normalization.from_dict(checkpoint.normalization)
        model = checkpoint.model
    trainer = Trainer(
        model,
        optim.get(t.optimizer.name, **t.optimizer.hyperparameters),
        norm.norm(train_x),
        train_y,
        epochs=t.epochs,
        batch_size=t.batch_size,
        seed=t.seed,
        val=(norm.norm(val_x), val_y) if len(val_y) else None,
        lr_decay=t.lr_decay,
        threads=threads,
    )
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint.checkpoint)
    return Run(model, trainer, norm)


def evaluate(model, images, labels, classes=10, batch_size=32, threads=1):
    """Accuracy, per-class precision and recall, and the confusion matrix.

    confusion[t, p] counts images of true class t predicted as p. ``threads`` share the
    predictions (``Sequential.predict``).
    """
    labels = np.asarray(labels)
    predicted = model.predict(images, batch_size=batch_size, threads=threads)
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
        "per_class": {
            str(k): {
                "precision": None if np.isnan(precision[k]) else float(precision[k]),
                "recall": None if np.isnan(recall[k]) else float(recall[k]),
                "support": int(support[k]),
            }
            for k in range(classes)
        },
        "confusion": confusion.tolist(),
    }
