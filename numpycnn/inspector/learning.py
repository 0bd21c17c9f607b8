"""Learn from this example: real training steps on one image, on a copy of the model.

A ``Learner`` holds a copy of a model file's network and the optimiser it was trained with:
its state from the file's training checkpoint where there is one, else fresh, with the
hyperparameters of the file's config (the 2018 reference's own update for its pickle). A
step is the engine's own ``train_step`` on a batch of the one image and a chosen label, at
a chosen rate; the file and the inspected model are never touched. For one weight the last
step's update is recomputed in float64 from the gradient and the optimiser's state before
the step (``update_numbers``), beside the engine's result.

``Sessions`` keeps one learner per page session in a bounded LRU, so that any number of
pages (or a hostile client inventing ids) costs at most ``LIMIT`` copies of the model.
"""

import copy
import math
import re
import threading
from collections import OrderedDict

import numpy as np

from ..engine import Sequential, losses, optim
from ..modelfile import LEGACY_FORMAT
from .papers import EQUATIONS
from .tracing import InspectionError, class_index, layer_labels, unit_index

__all__ = ["LIMIT", "MAX_RATE", "MAX_STEPS", "Learner", "Sessions", "trained_optimizer"]

#: At most this many page sessions hold a copy of the model; the least recently used goes.
LIMIT = 8
#: Most steps one request may take, and the largest rate it may set.
MAX_STEPS = 100
MAX_RATE = 10.0
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def trained_optimizer(saved):
    """(optimiser, where its settings and state come from) for a loaded model file: the
    checkpoint's optimiser with its state, else the config's optimiser fresh, else the 2018
    reference's update for its pickle, else Adam's defaults.

    A checkpoint's rate is the schedule's rate at its last step (a one-cycle run ends near
    1e-8, at which a step changes nothing visible); the optimiser starts at the config's
    base rate instead, where the file has one."""
    ckpt = saved.checkpoint or {}
    state = ckpt.get("optimizer") if isinstance(ckpt, dict) else None
    training = (saved.config or {}).get("training") or {}
    settings = training.get("optimizer")
    if isinstance(state, dict) and isinstance(state.get("spec"), dict):
        spec = dict(state["spec"])
        try:
            opt = optim.get(spec.pop("name", None), **spec)
            opt.load_state_dict({k: v for k, v in state.items() if k != "spec"})
        except (KeyError, TypeError, ValueError) as exc:
            raise InspectionError(f"the model file's optimiser state is unusable: {exc}") from None
        for key in ("m", "v", "velocity"):
            value = getattr(opt, key, None)
            if value is not None and np.shape(value) != (saved.model.num_params,):
                raise InspectionError(
                    f"the checkpoint's optimiser state {key!r} has the wrong size"
                )
        source = f"the model file's checkpoint (after {opt.t:,} steps)"
        base = settings.get("lr") if isinstance(settings, dict) else None
        if isinstance(base, (int, float)) and not isinstance(base, bool) and base > 0:
            if base != opt.lr:
                source += f"; rate: the config's {base:g} (the schedule's last was {opt.lr:.2g})"
            opt.lr = float(base)
        return opt, source
    if isinstance(settings, dict) and "name" in settings:
        spec = dict(settings)
        return optim.get(spec.pop("name"), **spec), "the model file's config, with fresh state"
    if saved.metadata.get("format") == LEGACY_FORMAT:
        return optim.get("escontrela"), "the 2018 reference's own update (its pickle has no state)"
    return optim.get("adam"), "Adam's defaults, fresh (the file names no optimiser)"


def _copy_model(model):
    twin = Sequential(
        model.specs(),
        loss=model.loss.kind,
        input_shape=model.input_shape,
        init=model.init,
        dtype=model.dtype,
    )
    twin.flat_params[...] = model.flat_params
    return twin


def _state_copy(opt):
    return {
        k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in opt.state_dict().items()
    }


def _restore(opt, state):
    opt.load_state_dict(
        {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    )


class Learner:
    """A copy of ``saved``'s network and its optimiser, for steps on one image at a time."""

    def __init__(self, saved):
        self.model = _copy_model(saved.model)
        self.original = saved.model  # read only: the file's parameters, for "since the file"
        self.optimizer, self.source = trained_optimizer(saved)
        self.spec = self.optimizer.spec()
        self.labels = layer_labels(self.model)
        self._start = _state_copy(self.optimizer)
        self.steps = 0
        self._last = None  # (params, optimiser state) before the last step, for update_numbers
        self.lock = threading.Lock()

    def reset(self):
        """The file's parameters and the optimiser's starting state again."""
        self.model.flat_params[...] = self.original.flat_params
        _restore(self.optimizer, self._start)
        self.steps, self._last = 0, None

    def evaluate(self, x, label, model=None):
        """Loss for ``label`` and probabilities of the one image ``x`` (1, C, H, W)."""
        model = model or self.model
        # on copies of the layers: the inspected model may be serving other requests
        out = model.forward(x, [copy.copy(layer) for layer in model.layers])
        loss = losses.get(model.loss.kind).forward(out, np.array([label]))
        probabilities = model.loss.probabilities(out)[0]
        return {
            "loss": loss,
            "probabilities": probabilities.tolist(),
            "predicted": int(np.argmax(out[0])),
        }

    def learn(self, x, label, lr, steps):
        """``steps`` training steps at rate ``lr`` on the batch of ``x`` labelled ``label``;
        the loss before each step, and each layer's and filter's change."""
        model, opt = self.model, self.optimizer
        before = [{k: p.copy() for k, p in layer.params.items()} for layer in model.layers]
        seen = []
        with np.errstate(all="ignore"):  # a rate far too high diverges: NaN is an answer
            for _ in range(steps):
                self._last = (model.flat_params.copy(), _state_copy(opt))
                opt.lr = lr
                loss, _ = model.train_step(x, np.array([label]), opt)
                seen.append(loss)
                self.steps += 1
        return seen, self._changes(before)

    def _changes(self, before):
        out = []
        for i, (layer, old) in enumerate(zip(self.model.layers, before)):
            if "weight" not in layer.params:
                continue
            w, b = layer.params["weight"], layer.params["bias"]
            dw = (w - old["weight"]).astype(np.float64)
            file_w = self.original.layers[i].params["weight"]
            entry = {
                "layer": i,
                "label": self.labels[i],
                "kind": layer.kind,
                "weight_change": float(np.linalg.norm(dw)),
                "weight_norm": float(np.linalg.norm(old["weight"].astype(np.float64))),
                "bias_change": float(np.linalg.norm((b - old["bias"]).astype(np.float64))),
                "since_file": float(np.linalg.norm((w - file_w).astype(np.float64))),
            }
            norm = entry["weight_norm"]
            entry["relative"] = entry["weight_change"] / norm if norm > 0 else None
            if layer.kind == "conv2d":
                entry["filters"] = np.linalg.norm(dw.reshape(dw.shape[0], -1), axis=1).tolist()
                entry["delta"] = dw
            out.append(entry)
        return out

    # ----- one weight's update in numbers -----

    def _slices(self):
        """(layer index, parameter name, shape, offset) of every parameter in the model's
        flat buffer, in its order (weights first, then biases: ``Sequential._allocate``)."""
        model, offset = self.model, 0
        for owner, name, shape in model._ordered:
            yield model.layers.index(owner), name, shape, offset
            offset += math.prod(shape)

    def locate(self, layer, param, index):
        """The flat index of parameter ``param`` [``index``] of layer ``layer``."""
        model = self.model
        if (
            not isinstance(layer, int)
            or isinstance(layer, bool)
            or not 0 <= layer < len(model.layers)
        ):
            raise InspectionError(f"weight layer must be a layer index, got {layer!r:.40}")
        params = model.layers[layer].params
        if param not in params:
            raise InspectionError(f"layer {self.labels[layer]} has no parameter {param!r:.40}")
        shape = params[param].shape if param == "weight" else params[param].shape[:1]
        where = unit_index(index, shape, f"{self.labels[layer]} {param}")
        full = where if param == "weight" else (where[0], 0)
        for i, name, pshape, offset in self._slices():
            if i == layer and name == param:
                return offset + int(np.ravel_multi_index(full, pshape))
        raise InspectionError(f"layer {self.labels[layer]} has no parameter {param!r}")

    def name(self, flat):
        """(layer, param, index) of flat parameter index ``flat``."""
        for layer, name, pshape, offset in self._slices():
            if flat < offset + math.prod(pshape):
                index = [int(v) for v in np.unravel_index(flat - offset, pshape)]
                return layer, name, index if name == "weight" else index[:1]
        raise IndexError(flat)

    def most_changed(self):
        """The flat index of the parameter the last step moved most, or None."""
        if self._last is None:
            return None
        moved = np.abs(self.model.flat_params.astype(np.float64) - self._last[0])
        return int(np.nanargmax(moved)) if np.isfinite(moved).any() else 0

    def update_numbers(self, flat):
        """The last step's update of flat parameter ``flat``, recomputed in float64 from its
        gradient and the optimiser's state before the step, beside the engine's result."""
        if self._last is None:
            return None
        params, state = self._last
        opt, model = self.optimizer, self.model
        g = float(model.flat_grads[flat])  # the last step's gradient (the step leaves it)
        w0 = float(params[flat])
        lr, t = float(opt.lr), int(state["t"]) + 1
        layer, param, index = self.name(flat)
        rows = {"g": g, "w_before": w0, "lr": lr, "t": t}
        kind = opt.kind
        with np.errstate(all="ignore"):
            if kind == "sgd":
                w = w0 - lr * g
            elif kind == "momentum":
                v0 = 0.0 if state["velocity"] is None else float(state["velocity"][flat])
                v = opt.momentum * v0 + g
                rows.update(mu=opt.momentum, v_before=v0, v=v, v_engine=float(opt.velocity[flat]))
                w = w0 - lr * v
            elif kind == "adam":
                m0 = 0.0 if state["m"] is None else float(state["m"][flat])
                v0 = 0.0 if state["v"] is None else float(state["v"][flat])
                b1, b2, eps = opt.beta1, opt.beta2, opt.eps
                m = b1 * m0 + (1 - b1) * g
                v = b2 * v0 + (1 - b2) * g * g
                c1, c2 = 1 - b1**t, 1 - b2**t
                m_hat, v_hat = m / c1, v / c2
                step = lr * m_hat / (math.sqrt(v_hat) + eps)
                rows.update(beta1=b1, beta2=b2, eps=eps, m_before=m0, v_before=v0, m=m, v=v)
                rows.update(m_engine=float(opt.m[flat]), v_engine=float(opt.v[flat]))
                rows.update(correction1=c1, correction2=c2, m_hat=m_hat, v_hat=v_hat, step=step)
                w = w0 - step
            else:  # escontrela: no state, no bias correction, eps inside the root
                b1, b2, eps = opt.beta1, opt.beta2, opt.eps
                step = lr * (1 - b1) * g / math.sqrt((1 - b2) * g * g + eps)
                rows.update(beta1=b1, beta2=b2, eps=eps, step=step)
                w = w0 - step
        engine = float(model.flat_params[flat])
        return {
            "optimizer": kind,
            "equation": kind,
            "layer": layer,
            "label": self.labels[layer],
            "param": param,
            "index": index,
            **rows,
            "w": w,
            "engine": engine,
            "difference": w - engine,
        }


class Sessions:
    """One ``Learner`` per page session id, at most ``limit`` of them (least recently
    used first out), for the model file ``saved``."""

    def __init__(self, saved, limit=LIMIT):
        self.saved, self.limit = saved, limit
        self._learners = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._learners)

    def get(self, session):
        if not isinstance(session, str) or not SESSION_ID.fullmatch(session):
            raise InspectionError(
                "'session' must be 1-64 letters, digits, '-' or '_' (the page's own id)"
            )
        with self._lock:
            learner = self._learners.pop(session, None)
            if learner is None:
                learner = Learner(self.saved)
            self._learners[session] = learner
            while len(self._learners) > self.limit:
                self._learners.popitem(last=False)
            return learner

    def answer(self, body, normalised):
        """The answer to one ``/api/learn`` request ``body``; ``normalised()`` gives the
        request's image, normalised, (1, C, H, W)."""
        learner = self.get(body.get("session"))
        classes = int(learner.model.output_shape[0])
        label = class_index(body.get("label"), classes, "label")
        steps = body.get("steps", 1)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
            raise InspectionError(
                f"steps must be an integer from 0 to {MAX_STEPS}, got {steps!r:.40}"
            )
        lr = body.get("lr", learner.spec["lr"])
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= MAX_RATE:
            raise InspectionError(
                f"lr must be a number above 0 and at most {MAX_RATE:g}, got {lr!r:.40}"
            )
        reset = body.get("reset", False)
        if not isinstance(reset, bool):
            raise InspectionError(f"reset must be true or false, got {reset!r:.40}")
        weight = body.get("weight")
        if weight is not None and not isinstance(weight, dict):
            raise InspectionError("weight must be an object {layer, param, index}")
        x = normalised()
        with learner.lock:
            flat = None
            if weight is not None:
                flat = learner.locate(
                    weight.get("layer"), weight.get("param", "weight"), weight.get("index")
                )
            if reset:
                learner.reset()
            before = learner.evaluate(x, label)
            seen, changes = learner.learn(x, label, float(lr), steps)
            after = learner.evaluate(x, label)
            if flat is None:
                flat = learner.most_changed()
            return {
                "optimizer": {
                    **learner.spec,
                    "source": learner.source,
                    "t": learner.optimizer.t,
                    "equation": EQUATIONS[learner.spec["name"]],
                },
                "label": label,
                "lr": float(lr),
                "steps": steps,
                "total_steps": learner.steps,
                "file": learner.evaluate(x, label, learner.original),
                "before": before,
                "after": after,
                "losses": seen,
                "changes": changes,
                "weight": None if flat is None else learner.update_numbers(flat),
                "limits": {"steps": MAX_STEPS, "lr": MAX_RATE},
            }
