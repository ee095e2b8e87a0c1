"""Optimisers (Adam, AdamW, SGD) and learning-rate schedulers, with torch.optim's semantics and names.

:mod:`minidae.optim.optimizers` holds the optimisers and their maths (``adam``, ``sgd``);
:mod:`minidae.optim.lr_scheduler` the schedulers (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
LambdaLR, ReduceLROnPlateau). docs/optim.md explains both.
"""
from . import lr_scheduler
from .optimizers import (SGD, Adam, AdamW, Optimizer, adam, adam_step, flat_state_dict, flush_tiny,
                         nested_state_dict, set_flush_denormal, sgd, zero_grads)

__all__ = ["Optimizer", "Adam", "AdamW", "SGD", "adam", "adam_step", "sgd", "zero_grads", "flat_state_dict",
           "nested_state_dict", "lr_scheduler", "set_flush_denormal", "flush_tiny"]
