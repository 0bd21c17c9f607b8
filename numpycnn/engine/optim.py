"""Optimisers. Each updates a model's flat parameter buffer in place from its flat gradient
buffer, so one vectorised update covers every layer. ``state_dict`` holds what a checkpoint
must keep to resume exactly.
"""

import numpy as np


class Optimizer:
    kind = None

    def __init__(self, lr):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.lr = float(lr)
        self.t = 0  # steps taken

    def step(self, params, grads):
        raise NotImplementedError

    def hyperparameters(self):
        return {"lr": self.lr}

    def spec(self):
        return {"name": self.kind, **self.hyperparameters()}

    def state_dict(self):
        return {"t": self.t}

    def load_state_dict(self, state):
        self.t = int(state["t"])


def _check_beta(name, value):
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


class SGD(Optimizer):
    """Plain gradient descent: p -= lr * g."""

    kind = "sgd"

    def step(self, params, grads):
        self.t += 1
        params -= self.lr * grads


class Momentum(Optimizer):
    """Gradient descent with momentum (PyTorch's form): v = mu*v + g; p -= lr * v."""

    kind = "momentum"

    def __init__(self, lr, momentum=0.9):
        super().__init__(lr)
        self.momentum = _check_beta("momentum", momentum)
        self.velocity = None

    def step(self, params, grads):
        self.t += 1
        if self.velocity is None:
            self.velocity = np.zeros_like(params)
        self.velocity *= self.momentum
        self.velocity += grads
        params -= self.lr * self.velocity

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum}

    def state_dict(self):
        return {"t": self.t, "velocity": self.velocity}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.velocity = None if state["velocity"] is None else np.array(state["velocity"])


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) with persistent moments and bias correction.

    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    kind = "adam"

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        self.beta1 = _check_beta("beta1", beta1)
        self.beta2 = _check_beta("beta2", beta2)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps = float(eps)
        self.m = self.v = None

    def step(self, params, grads):
        if self.m is None:
            self.m, self.v = np.zeros_like(params), np.zeros_like(params)
            self._buf = np.empty_like(params)
        self.t += 1
        b1, b2, m, v, buf = self.beta1, self.beta2, self.m, self.v, self._buf
        # m += (1 - b1)(g - m) and v += (1 - b2)(g^2 - v) are the moment updates above,
        # in fewer passes and without temporaries.
        np.subtract(grads, m, out=buf)
        buf *= 1 - b1
        m += buf
        np.multiply(grads, grads, out=buf)
        buf -= v
        buf *= 1 - b2
        v += buf
        # Bias corrections folded into the scalars: lr_t = lr sqrt(1-b2^t) / (1-b1^t) and
        # eps_t = eps sqrt(1-b2^t) give exactly the update above.
        c2 = np.sqrt(1 - b2**self.t)
        lr_t = self.lr * c2 / (1 - b1**self.t)
        np.sqrt(v, out=buf)
        buf += self.eps * c2
        np.divide(m, buf, out=buf)
        buf *= lr_t
        params -= buf

    def hyperparameters(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def state_dict(self):
        return {"t": self.t, "m": self.m, "v": self.v}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        if state["m"] is None:
            self.m = self.v = None
        else:
            self.m, self.v = np.array(state["m"]), np.array(state["v"])
            self._buf = np.empty_like(self.m)


class EscontrelaAdam(Adam):
    """The 2018 reference's update, for faithful reproduction (SPEC.md).

    Its moments start from zero inside every batch and there is no bias correction, so
    each step is p -= lr * (1-b1) g / sqrt((1-b2) g^2 + eps), eps inside the square root:
    close to a sign-of-gradient step of size lr * (1-b1) / sqrt(1-b2). Adam's
    hyperparameters with the reference's defaults; no state but the step count.
    """

    kind = "escontrela"

    def __init__(self, lr=0.01, beta1=0.95, beta2=0.99, eps=1e-7):
        super().__init__(lr, beta1, beta2, eps)

    def step(self, params, grads):
        self.t += 1
        denom = np.sqrt((1 - self.beta2) * grads * grads + self.eps)
        params -= self.lr * (1 - self.beta1) * grads / denom

    def state_dict(self):
        return {"t": self.t}

    def load_state_dict(self, state):
        self.t = int(state["t"])


OPTIMIZERS = {cls.kind: cls for cls in (SGD, Momentum, Adam, EscontrelaAdam)}


def get(name, **hyperparameters):
    """A new optimiser ``name`` with the given hyperparameters."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        known = ", ".join(sorted(OPTIMIZERS))
        raise ValueError(f"unknown optimiser {name!r} (known: {known})") from None
    try:
        return cls(**hyperparameters)
    except TypeError as exc:
        raise ValueError(f"optimiser {name!r}: {exc}") from None
