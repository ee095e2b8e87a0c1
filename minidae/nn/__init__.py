"""Layers with hand-written forward and backward passes (PyTorch layouts and defaults)."""
from . import functional, init
from . import utils
from .activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv2d, ConvTranspose2d
from .dropout import Dropout, Dropout2d
from .linear import Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .containers import Identity, ModuleDict, ModuleList, Sequential
from .module import Module, Parameter
from .normalization import BatchNorm2d
from .pooling import AvgPool2d, MaxPool2d, Upsample
from .shape import Flatten, Unflatten

__all__ = ["functional", "init", "utils", "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Identity",
           "Conv2d", "ConvTranspose2d", "Linear", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "LogSoftmax", "Softmax",
           "Flatten", "Unflatten", "MaxPool2d", "AvgPool2d", "Upsample", "BatchNorm2d", "Dropout", "Dropout2d",
           "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "NLLLoss"]
