"""Layers with hand-written forward and backward passes (PyTorch layouts and defaults)."""
from . import functional, init
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .conv import Conv2d, ConvTranspose2d
from .dropout import Dropout, Dropout2d
from .linear import Linear
from .loss import BCELoss, BCEWithLogitsLoss, L1Loss, MSELoss
from .module import Module, Parameter, Sequential
from .normalization import BatchNorm2d
from .pooling import AvgPool2d, MaxPool2d, Upsample
from .shape import Flatten, Unflatten

__all__ = ["functional", "init", "Module", "Parameter", "Sequential", "Conv2d", "ConvTranspose2d", "Linear", "ReLU", "LeakyReLU",
           "Tanh", "Sigmoid", "Flatten", "Unflatten", "MaxPool2d", "AvgPool2d", "Upsample", "BatchNorm2d", "Dropout",
           "Dropout2d", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss"]
