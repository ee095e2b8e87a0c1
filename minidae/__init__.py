"""minidae: a small deep-learning framework with hand-written backprop, on NumPy or CuPy.

>>> import numpy as np
>>> from minidae import backend, nn
>>> backend.use("numpy"); backend.seed(0)
>>> layer = nn.Conv2d(1, 4, kernel_size=3, stride=2, padding=1)
>>> y = layer(np.zeros((2, 1, 28, 28), dtype=np.float32))
>>> y.shape, layer.backward(np.ones_like(y)).shape
((2, 4, 14, 14), (2, 1, 28, 28))
"""
from . import backend, models, nn, optim, speed
from .gradcheck import GradcheckResult, gradcheck
from .nn.module import evaluating, no_grad
from .optim import set_flush_denormal
from .speed import plain_maths

__version__ = "0.1.0"
__all__ = ["backend", "nn", "optim", "models", "speed", "gradcheck", "GradcheckResult", "no_grad", "evaluating",
           "plain_maths", "set_flush_denormal"]
