"""Weight initialisers. Each takes the weight's shape and a NumPy Generator; biases start at 0.

Shapes are (F, C, KH, KW) for convolutions and (out, in) for dense layers, so
fan_in = C*KH*KW (or in) and fan_out = F*KH*KW (or out), as Glorot and He define them.
"""

import math


def fans(shape):
    """(fan_in, fan_out) of a weight of the given shape."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def reference(shape, rng):
    """The 2018 reference's scheme (SPEC.md).

    Filters: normal with standard deviation 1/sqrt(number of elements of the whole filter
    bank); dense weights: standard normal times 0.01.
    """
    if len(shape) == 4:
        return rng.normal(0.0, 1.0 / math.sqrt(math.prod(shape)), size=shape)
    return 0.01 * rng.standard_normal(size=shape)


def glorot_uniform(shape, rng):
    """Glorot and Bengio (2010): U[-a, a], a = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape)


def he_normal(shape, rng):
    """He et al. (2015), for ReLU networks: normal with standard deviation sqrt(2 / fan_in)."""
    fan_in, _ = fans(shape)
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)


def fan_sum_uniform(shape, rng):
    """U[-z, z], z = sqrt(1 / (fan_in + fan_out)): the LeNet appendix's rule (seed 003, A.3.1).

    Its fans are ours: input maps times kernel area and output maps times kernel area for a
    convolution; inputs and outputs for a dense layer (Table A.1: z = 0.0756, 0.0471 and
    0.0704 for its three layers). It is Glorot's uniform rule with 1 in place of 6, so the
    variance z^2 / 3 is a sixth of Glorot's: small weights, which keep sigmoids unsaturated.
    """
    fan_in, fan_out = fans(shape)
    z = math.sqrt(1.0 / (fan_in + fan_out))
    return rng.uniform(-z, z, size=shape)


INITIALISERS = {
    "reference": reference,
    "glorot_uniform": glorot_uniform,
    "he_normal": he_normal,
    "fan_sum_uniform": fan_sum_uniform,
}


def get(name):
    """The initialiser called ``name``; ValueError listing the known ones otherwise."""
    try:
        return INITIALISERS[name]
    except KeyError:
        known = ", ".join(sorted(INITIALISERS))
        raise ValueError(f"unknown initialiser {name!r} (known: {known})") from None
