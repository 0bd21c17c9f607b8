"""Layers: small classes with ``forward(x)``, which keeps what backward needs, and
``backward(grad)``, which stores the parameter gradients and returns dL/dx.

All image tensors are NCHW-shaped. Conv and pool layers compute in images-last
(C, H, W, N) memory (``kernels.py``) and return NCHW views of it; elementwise layers
preserve that memory order, so the next conv or pool layer gets its array back for free,
and ``Flatten`` hands ``Dense`` a transposed view of it.

A layer with parameters declares their shapes in ``param_shapes`` (weights named
``weight``, biases ``bias`` of shape (out, 1) as in the reference's pickle); the model
allocates them and hands each layer views into its flat parameter and gradient buffers.
"""

import numpy as np

from ..words import a
from . import kernels
from .kernels import to_chwn, to_nchw


class Layer:
    """Base class: a layer without parameters whose output has its input's shape."""

    kind = None  # the spec name, e.g. "conv2d"
    needs_input_grad = True  # the model turns this off for its first layer
    training = False  # batch norm and dropout differ in training (Sequential.train)

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.state = {}

    def param_shapes(self, input_shape):
        """Shapes of the parameters for a per-sample ``input_shape``; none by default."""
        return {}

    def state_shapes(self, input_shape):
        """Shapes of the layer's state (values that are not parameters: batch norm's
        running statistics); none by default."""
        return {}

    def output_shape(self, input_shape):
        return input_shape

    def spec(self):
        """The plain dict that rebuilds this layer (see ``model.build_layer``)."""
        return {"type": self.kind}

    def switches(self):
        """The discrete choices of the last forward (ReLU masks, max positions).

        A finite difference is a valid derivative only where these do not change.
        """
        return ()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "type")
        return f"{type(self).__name__}({args})"


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Conv2D(Layer):
    """2-D convolution (cross-correlation, no kernel flip) with a bias per filter.

    weight (filters, C, kernel, kernel), bias (filters, 1); output side
    floor((H + 2*padding - kernel) / stride) + 1.
    """

    kind = "conv2d"

    def __init__(self, filters, kernel, stride=1, padding=0, init=None):
        super().__init__()
        self.filters = _positive_int("filters", filters)
        self.kernel = _positive_int("kernel", kernel)
        self.stride = _positive_int("stride", stride)
        self.padding = _positive_int("padding", padding, minimum=0)
        self.init = init

    def param_shapes(self, input_shape):
        c = input_shape[0]
        return {
            "weight": (self.filters, c, self.kernel, self.kernel),
            "bias": (self.filters, 1),
        }

    def output_shape(self, input_shape):
        c, h, w = input_shape
        oh = kernels.output_size(h, self.kernel, self.stride, self.padding)
        ow = kernels.output_size(w, self.kernel, self.stride, self.padding)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"conv2d kernel {self.kernel} (padding {self.padding}) does not fit "
                f"{a(f'{h}x{w}')} input"
            )
        return (self.filters, oh, ow)

    def forward(self, x):
        xc = to_chwn(x)
        out, self._cache = kernels.conv2d_forward(
            xc, self.params["weight"], self.params["bias"][:, 0], self.stride, self.padding
        )
        self._x_shape = xc.shape
        return to_nchw(out)

    def backward(self, grad):
        dx, dw, db = kernels.conv2d_backward(
            to_chwn(grad),
            self._cache,
            self.params["weight"],
            self._x_shape,
            self.stride,
            self.padding,
            need_dx=self.needs_input_grad,
        )
        self.grads["weight"][...] = dw
        self.grads["bias"][:, 0] = db
        return None if dx is None else to_nchw(dx)

    def spec(self):
        s = {
            "type": self.kind,
            "filters": self.filters,
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
        }
        if self.init is not None:
            s["init"] = self.init
        return s


class _Pool2D(Layer):
    """Shared shape logic of the pooling layers: ``size`` x ``size`` windows, ``stride``."""

    def __init__(self, size=2, stride=None):
        super().__init__()
        self.size = _positive_int("size", size)
        self.stride = self.size if stride is None else _positive_int("stride", stride)

    def output_shape(self, input_shape):
        c, h, w = input_shape
        oh = kernels.output_size(h, self.size, self.stride)
        ow = kernels.output_size(w, self.size, self.stride)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.kind} window {self.size} does not fit {a(f'{h}x{w}')} input")
        return (c, oh, ow)

    def spec(self):
        return {"type": self.kind, "size": self.size, "stride": self.stride}


class MaxPool2D(_Pool2D):
    """Max pooling; backward sends each window's gradient to its first maximum only."""

    kind = "maxpool2d"

    def forward(self, x):
        out, self._cache = kernels.maxpool_forward(to_chwn(x), self.size, self.stride)
        return to_nchw(out)

    def switches(self):
        planes, out, _ = self._cache
        return tuple(kernels.first_max_masks(planes, out))

    def backward(self, grad):
        dx = kernels.maxpool_backward(to_chwn(grad), self._cache, self.size, self.stride)
        return to_nchw(dx)


class AvgPool2D(_Pool2D):
    """Average pooling; backward shares each window's gradient equally among its inputs."""

    kind = "avgpool2d"

    def forward(self, x):
        xc = to_chwn(x)
        self._x_shape = xc.shape
        return to_nchw(kernels.avgpool_forward(xc, self.size, self.stride))

    def backward(self, grad):
        dx = kernels.avgpool_backward(to_chwn(grad), self._x_shape, self.size, self.stride)
        return to_nchw(dx)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C order, as the reference flattens."""

    kind = "flatten"

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x):
        self._x_shape = x.shape
        if x.ndim != 4:
            return x.reshape(x.shape[0], -1)
        # (C*H*W, N) in images-last memory is the flat (N, C*H*W) transposed: a view.
        return to_chwn(x).reshape(-1, x.shape[0]).T

    def backward(self, grad):
        if len(self._x_shape) != 4:
            return grad.reshape(self._x_shape)
        n, c, h, w = self._x_shape
        return to_nchw(np.ascontiguousarray(grad.T).reshape(c, h, w, n))


class Dense(Layer):
    """Fully connected: y = x @ weight.T + bias, weight (units, in), bias (units, 1)."""

    kind = "dense"

    def __init__(self, units, init=None):
        super().__init__()
        self.units = _positive_int("units", units)
        self.init = init

    def param_shapes(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"dense expects a flat input, got shape {input_shape}: add a flatten layer"
            )
        return {"weight": (self.units, input_shape[0]), "bias": (self.units, 1)}

    def output_shape(self, input_shape):
        return (self.units,)

    def forward(self, x):
        self._x = x
        out = x @ self.params["weight"].T
        out += self.params["bias"][:, 0]
        return out

    def backward(self, grad):
        self.grads["weight"][...] = grad.T @ self._x
        self.grads["bias"][:, 0] = np.ones(grad.shape[0], dtype=grad.dtype) @ grad
        if not self.needs_input_grad:
            return None
        # Computed transposed, so that Flatten gets back images-last memory without a copy.
        return (self.params["weight"].T @ grad.T).T

    def spec(self):
        s = {"type": self.kind, "units": self.units}
        if self.init is not None:
            s["init"] = self.init
        return s
