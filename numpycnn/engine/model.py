"""The sequential model: layers built from plain specs, parameters in one flat buffer.

A spec is a dict such as ``{"type": "conv2d", "filters": 8, "kernel": 5}``; the config
file's network section is a list of them. The model allocates every parameter (and its
gradient) as a view into one flat array, weights first and then biases, each in layer
order, which for the reference network is the reference's order
``[f1, f2, w3, w4, b1, b2, b3, b4]``; optimisers update that flat array in one go.
"""

import contextlib
import copy
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from . import init as initialisers
from . import losses
from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .batchnorm import BatchNorm1D, BatchNorm2D, Dropout
from .inference import Plan
from .layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D

LAYERS = {
    cls.kind: cls
    for cls in (
        Conv2D,
        MaxPool2D,
        AvgPool2D,
        Flatten,
        Dense,
        ReLU,
        LeakyReLU,
        Sigmoid,
        Tanh,
        Softmax,
        BatchNorm2D,
        BatchNorm1D,
        Dropout,
    )
}
ALIASES = {"conv": "conv2d", "maxpool": "maxpool2d", "avgpool": "avgpool2d", "fc": "dense"}

#: Escontrela's network (SPEC.md): conv-conv-maxpool-dense128-dense10, 105,634 parameters.
REFERENCE_LAYERS = (
    {"type": "conv2d", "filters": 8, "kernel": 5},
    {"type": "relu"},
    {"type": "conv2d", "filters": 8, "kernel": 5},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2, "stride": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 128},
    {"type": "relu"},
    {"type": "dense", "units": 10},
)
MNIST_SHAPE = (1, 28, 28)
DTYPES = ("float32", "float64")
#: Layers that take images: (channels, height, width) per sample.
IMAGE_KINDS = ("conv2d", "maxpool2d", "avgpool2d", "batchnorm2d")
#: Layers whose training output depends on the whole batch (not image by image).
BATCH_KINDS = ("batchnorm2d", "batchnorm1d")


def build_layer(spec):
    """A layer from its spec dict; ValueError naming the type or key at fault."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"a layer spec must be a mapping with a 'type' key, got {spec!r}")
    kind = ALIASES.get(spec["type"], spec["type"])
    if kind not in LAYERS:
        known = ", ".join(sorted(LAYERS))
        raise ValueError(f"unknown layer type {spec['type']!r} (known: {known})")
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    try:
        return LAYERS[kind](**kwargs)
    except TypeError as exc:
        raise ValueError(f"layer {kind!r}: {exc}") from None


def describe_shape(shape):
    """A per-sample shape in words: '128 values' or '8x12x12 (channels x height x width)'."""
    if len(shape) == 1:
        return f"{shape[0]:,} values"
    dims = "x".join(str(n) for n in shape)
    return f"{dims} (channels x height x width)" if len(shape) == 3 else f"shape {dims}"


def infer_shapes(layers, input_shape, name=None, source=None):
    """(layer, parameter shapes, output shape) of each of ``layers`` (Layer objects) fed
    ``input_shape``, without allocating anything.

    A layer that cannot take what the one before it gives is a ValueError naming both:
    ``name(i)`` names layer i (default 'layer 3'), ``source`` the network's input.
    """
    name = name or (lambda i: f"layer {i + 1}")
    shape = tuple(input_shape)
    source = source or "the input"
    result = []
    for i, layer in enumerate(layers):
        here = f"{name(i)} ({layer.kind})"
        feeder = source if i == 0 else f"{name(i - 1)} ({layers[i - 1].kind})"
        if layer.kind in IMAGE_KINDS and len(shape) != 3:
            raise ValueError(
                f"{here} needs an input of channels x height x width, but {feeder} gives "
                f"{describe_shape(shape)}"
            )
        if layer.kind in ("dense", "batchnorm1d") and len(shape) != 1:
            raise ValueError(
                f"{here} needs a flat input, but {feeder} gives {describe_shape(shape)}: "
                "add a flatten layer before it"
            )
        try:
            params = layer.param_shapes(shape)
            out = layer.output_shape(shape)
        except ValueError as exc:
            raise ValueError(f"{here}: {exc}, which {feeder} gives") from None
        result.append((layer, params, out))
        shape = out
    return result


def count_params(layers, input_shape):
    """How many parameters the network of ``layers`` (specs or Layer objects) has on
    ``input_shape``: what building it would allocate (twice: values and gradients)."""
    built = [build_layer(s) if isinstance(s, dict) else s for s in layers]
    return sum(
        math.prod(shape)
        for _, params, _ in infer_shapes(built, input_shape)
        for shape in params.values()
    )


class Sequential:
    """Layers applied in order, a loss on the last output, parameters in flat buffers.

    ``layers``: Layer objects or spec dicts; ``loss``: a loss name (see ``losses``);
    ``input_shape``: one sample's (C, H, W); ``init``: the default initialiser for layers
    that name none; ``dtype``: float32 (default) or float64; ``seed``: initialisation seed;
    ``draw=False``: no weights drawn (left at zero), for a network whose parameters are set
    next (loading a snapshot, a worker on shared parameters).
    """

    def __init__(
        self,
        layers,
        loss="softmax_cross_entropy",
        input_shape=MNIST_SHAPE,
        init="reference",
        dtype="float32",
        seed=0,
        draw=True,
    ):
        if str(np.dtype(dtype)) not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.layers = [build_layer(s) if isinstance(s, dict) else s for s in layers]
        if not self.layers:
            raise ValueError("a network needs at least one layer")
        self.loss = losses.get(loss) if isinstance(loss, str) else loss
        self.input_shape = tuple(input_shape)
        self.init = init
        initialisers.get(init)
        self._allocate()
        self.layers[0].needs_input_grad = False  # nothing upstream wants dL/dinput
        for i, layer in enumerate(self.layers):
            layer.index = i  # dropout draws its masks per layer position
        self.training = False
        self.step_key = (0, 0)  # (seed, step) of the training step: dropout's masks
        self.initialise(seed, draw)

    def _allocate(self):
        entries, self.shapes, self._state_entries, self.state_names = [], [], [], []
        for i, (layer, params, shape) in enumerate(infer_shapes(self.layers, self.input_shape)):
            entries.extend((layer, name, pshape) for name, pshape in params.items())
            fed = self.shapes[-1] if i else self.input_shape
            for name, sshape in layer.state_shapes(fed).items():
                self._state_entries.append((layer, name, sshape))
                self.state_names.append(f"{i}.{name}")
            self.shapes.append(shape)
        self.output_shape = self.shapes[-1]
        # Weights first, then biases: the reference's order for its network.
        ordered = [e for e in entries if e[1] == "weight"] + [
            e for e in entries if e[1] != "weight"
        ]
        self._ordered = ordered
        total = sum(math.prod(s) for _, _, s in ordered)
        self._bind(np.zeros(total, dtype=self.dtype), np.zeros(total, dtype=self.dtype))
        states = sum(math.prod(s) for _, _, s in self._state_entries)
        self._bind_state(np.zeros(states, dtype=self.dtype))
        parametrised = [layer for layer, name, _ in entries if name == "weight"]
        self.param_names = []
        for layer, name, _ in ordered:
            k = parametrised.index(layer) + 1
            letter = {"conv2d": "f"}.get(layer.kind, "g" if layer.kind in BATCH_KINDS else "w")
            letter = "b" if name == "bias" else letter
            self.param_names.append(f"{letter}{k}")

    def _bind(self, flat_params, flat_grads):
        """Make every layer's parameters and gradients views into these flat buffers."""
        self.flat_params, self.flat_grads = flat_params, flat_grads
        self.params, self.grads = [], []
        offset = 0
        for layer, name, pshape in self._ordered:
            size = math.prod(pshape)
            layer.params[name] = flat_params[offset : offset + size].reshape(pshape)
            layer.grads[name] = flat_grads[offset : offset + size].reshape(pshape)
            offset += size
            self.params.append(layer.params[name])
            self.grads.append(layer.grads[name])

    def _bind_state(self, flat_state):
        """Make every layer's state (running statistics) a view into ``flat_state``."""
        self.flat_state = flat_state
        offset = 0
        for layer, name, sshape in self._state_entries:
            size = math.prod(sshape)
            layer.state[name] = flat_state[offset : offset + size].reshape(sshape)
            offset += size

    def use_buffers(self, flat_params, flat_grads, copy=True, flat_state=None):
        """Move the flat parameter and gradient buffers into the given arrays.

        Both must be 1-D, C-contiguous, of the model's dtype and ``num_params`` long (e.g.
        views of shared memory, so that other processes see every update). With ``copy``
        the current values are copied in first; without it the arrays' contents become the
        parameters. Every view (``params``, ``grads``, each layer's) is rebuilt: views taken
        before this call keep pointing at the old buffers.
        """
        arrays = [("flat_params", flat_params, self.num_params)]
        arrays.append(("flat_grads", flat_grads, self.num_params))
        if flat_state is not None:
            arrays.append(("flat_state", flat_state, self.num_state))
        for what, a, size in arrays:
            if not (
                isinstance(a, np.ndarray)
                and a.shape == (size,)
                and a.dtype == self.dtype
                and a.flags.c_contiguous
                and a.flags.writeable
            ):
                raise ValueError(
                    f"{what} must be a writeable contiguous {self.dtype} array of shape ({size},)"
                )
        if copy:
            flat_params[...] = self.flat_params
            flat_grads[...] = self.flat_grads
            if flat_state is not None:
                flat_state[...] = self.flat_state
        self._bind(flat_params, flat_grads)
        if flat_state is not None:
            self._bind_state(flat_state)

    def initialise(self, seed=0, draw=True):
        """Draw every weight with its layer's initialiser (or the model's); zero the biases.
        ``draw=False``: batch norm's parameters and statistics only, no weight drawn."""
        rng = np.random.default_rng(seed) if draw else None
        for layer in self.layers:
            if layer.state:
                layer.reset_state()
            if hasattr(layer, "reset_parameters"):  # batch norm: gamma 1, beta 0, no draws
                layer.reset_parameters()
            elif "weight" in layer.params and rng is not None:
                draw = initialisers.get(getattr(layer, "init", None) or self.init)
                w = layer.params["weight"]
                w[...] = draw(w.shape, rng)
                layer.params["bias"][...] = 0

    # ----- modes and state -----

    def train(self, mode=True):
        """Training mode (batch norm's batch statistics, dropout's masks) or, with False,
        evaluation mode (running statistics, no dropout), for every layer. Returns self."""
        self.training = bool(mode)
        for layer in self.layers:
            layer.training = self.training
        return self

    def eval(self):
        return self.train(False)

    @contextlib.contextmanager
    def mode(self, training):
        """A context in which the model is in ``training`` mode, restored afterwards."""
        before = self.training
        self.train(training)
        try:
            yield self
        finally:
            self.train(before)

    def set_step(self, seed, step, rows=None):
        """The training step that the next forward passes belong to: dropout draws its
        masks from (seed, step, layer position) for the batch's ``rows`` (first row, batch
        size), None meaning the whole batch is the input."""
        self.step_key = (int(seed), int(step))
        for layer in self.layers:
            if layer.kind == "dropout":
                layer.key, layer.rows = self.step_key, rows

    @property
    def batch_dependent(self):
        """Whether a training forward pass mixes the images of a batch (batch norm)."""
        return any(layer.kind in BATCH_KINDS for layer in self.layers)

    @property
    def num_state(self):
        return self.flat_state.size

    def state(self):
        """Copies of the state arrays (``state_names`` order): batch norm's running mean,
        variance and batch count. State is not a parameter: no optimiser touches it."""
        return [layer.state[name].copy() for layer, name, _ in self._state_entries]

    def set_state(self, state):
        """Load ``state()`` output; ValueError on a count or shape mismatch."""
        state = list(state)
        if len(state) != len(self._state_entries):
            raise ValueError(f"expected {len(self._state_entries)} state arrays, got {len(state)}")
        for name, (layer, key, _), src in zip(self.state_names, self._state_entries, state):
            src = np.asarray(src)
            if src.shape != layer.state[key].shape:
                raise ValueError(
                    f"state {name}: expected shape {layer.state[key].shape}, got {src.shape}"
                )
            layer.state[key][...] = src

    # ----- running the network -----

    def _as_input(self, x):
        x = np.asarray(x, dtype=self.dtype)
        if x.shape[1:] != self.input_shape:
            if x.ndim == len(self.input_shape) and self.input_shape[0] == 1:
                x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
            if x.shape[1:] != self.input_shape:
                raise ValueError(
                    f"input of shape {x.shape} does not match the network's "
                    f"(N, {', '.join(map(str, self.input_shape))})"
                )
        return x

    def forward(self, x, layers=None):
        """The last layer's output for a batch ``x`` (N, C, H, W), keeping backward's caches
        in the layers (``layers``: copies of this model's, for another thread)."""
        out = self._as_input(x)
        for layer in self.layers if layers is None else layers:
            out = layer.forward(out)
        return out

    def backward(self):
        """Fill ``flat_grads`` from the loss computed by the last ``loss_on`` call."""
        g = self.loss.backward()
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def loss_on(self, x, labels):
        """Forward pass and loss; returns (mean loss, last output)."""
        out = self.forward(x)
        return self.loss.forward(out, np.asarray(labels)), out

    def train_step(self, x, labels, optimizer):
        """One step of ``optimizer`` on the batch (in training mode); returns (mean loss,
        correct predictions)."""
        with self.mode(True):
            loss, out = self.loss_on(x, labels)
            self.backward()
        optimizer.step(self.flat_params, self.flat_grads)
        return loss, int((out.argmax(axis=1) == labels).sum())

    def predict_proba(self, x, batch_size=32, threads=1):
        """Class scores (probabilities for softmax and sigmoid outputs), ``batch_size``
        images per forward pass (``inference.Plan``: the evaluation forward pass, fused
        where no backward follows). Small blocks keep each layer's working arrays in cache:
        here 32 predicts about 1.1x faster than 64 and 2.4x faster than 1,000.

        ``threads`` > 1 shares the blocks among that many threads, each running its own
        shallow copy of the layers (the parameters are shared, the caches are not) with
        BLAS held to one thread, so that NumPy's single-threaded passes run in parallel too:
        on 2 cores about 1.3-1.4x the throughput of one thread.
        """
        x = np.asarray(x)
        starts = list(range(0, x.shape[0], batch_size))
        if not starts:
            return np.zeros((0,) + self.output_shape, dtype=self.dtype)

        def scores(layers, group):
            plan = Plan(layers)  # the evaluation forward pass, without backward's caches
            return [
                self.loss.probabilities(plan(self._as_input(x[i : i + batch_size]))) for i in group
            ]

        threads = max(1, min(int(threads), len(starts)))
        if self.training:  # prediction always uses the running statistics, no dropout
            with self.mode(False):
                return self.predict_proba(x, batch_size, threads)
        if threads == 1:
            return np.concatenate(scores(self.layers, starts))
        groups = [list(g) for g in np.array_split(starts, threads)]
        copies = [self.layers] + [
            [copy.copy(layer) for layer in self.layers] for _ in range(threads - 1)
        ]
        with threadpool_limits(1), ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(scores, c, g) for c, g in zip(copies, groups)]
            return np.concatenate([p for f in futures for p in f.result()])

    def predict(self, x, batch_size=32, threads=1):
        return self.predict_proba(x, batch_size, threads).argmax(axis=1)

    # ----- parameters -----

    @property
    def num_params(self):
        return self.flat_params.size

    def get_params(self):
        """Copies of the parameters, in order (the reference's for its network)."""
        return [p.copy() for p in self.params]

    def set_params(self, params):
        """Load parameters in ``param_names`` order; ValueError on a count or shape mismatch."""
        params = list(params)
        if len(params) != len(self.params):
            raise ValueError(f"expected {len(self.params)} parameter arrays, got {len(params)}")
        for name, dst, src in zip(self.param_names, self.params, params):
            src = np.asarray(src)
            if src.shape != dst.shape:
                raise ValueError(f"parameter {name}: expected shape {dst.shape}, got {src.shape}")
            dst[...] = src

    def specs(self):
        """The layer specs that rebuild this network."""
        return [layer.spec() for layer in self.layers]


def reference_network(dtype="float32", seed=0, init="reference"):
    """The reference network of SPEC.md, freshly initialised."""
    return Sequential(REFERENCE_LAYERS, init=init, dtype=dtype, seed=seed)
