"""The numpycnn engine: layers, activations, losses, initialisers, optimisers and the
sequential model, each with a hand-written, vectorised forward and backward pass."""

from . import gradcheck, init, losses, optim
from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh, sigmoid, softmax
from .batchnorm import BatchNorm1D, BatchNorm2D, Dropout
from .layers import AvgPool2D, Conv2D, Dense, Flatten, Layer, MaxPool2D
from .model import (
    LAYERS,
    MNIST_SHAPE,
    REFERENCE_LAYERS,
    Sequential,
    build_layer,
    reference_network,
)

__all__ = [
    "AvgPool2D",
    "BatchNorm1D",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "LAYERS",
    "Layer",
    "LeakyReLU",
    "MNIST_SHAPE",
    "MaxPool2D",
    "REFERENCE_LAYERS",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "build_layer",
    "gradcheck",
    "init",
    "losses",
    "optim",
    "reference_network",
    "sigmoid",
    "softmax",
]
