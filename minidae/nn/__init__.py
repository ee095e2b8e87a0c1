"""Layers with hand-written forward and backward passes (PyTorch layouts and defaults)."""
from . import init
from .activation import ReLU, Sigmoid
from .conv import Conv2d, ConvTranspose2d
from .linear import Linear
from .loss import BCELoss, MSELoss
from .module import Module, Parameter, Sequential
from .pooling import MaxPool2d, Upsample
from .shape import Flatten, Unflatten

__all__ = ["init", "Module", "Parameter", "Sequential", "Conv2d", "ConvTranspose2d", "Linear", "ReLU",
           "Sigmoid", "Flatten", "Unflatten", "MaxPool2d", "Upsample", "MSELoss", "BCELoss"]
