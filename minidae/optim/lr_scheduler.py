"""Learning-rate schedulers, as torch.optim.lr_scheduler: each ``step()`` (once per epoch, after the optimiser's
steps) writes a new ``group["lr"]`` into every parameter group of the optimiser, by PyTorch's formulas and in
PyTorch's order of operations (the chainable forms, so the numbers are PyTorch's to the last bit).
``get_last_lr()`` returns the lrs the last step set. Creating a scheduler records each group's starting lr as
``group["initial_lr"]`` and takes step 0 (the lr stays the starting one).

On a GPU the optimiser reads its hyperparameters from device memory, refreshed before every replay of a
captured training step, so a scheduler's new lr takes effect in a CUDA graph too.
"""
import math
from collections import Counter

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LambdaLR",
           "ReduceLROnPlateau"]


class LRScheduler:
    """The base: ``base_lrs`` (each group's initial lr), ``last_epoch`` (steps taken, starting at 0 after the
    constructor's step), ``step()`` and ``get_last_lr()``; a subclass gives ``get_lr()``, the lrs of step
    ``last_epoch`` from the current ones."""

    def __init__(self, optimizer, last_epoch=-1):
        from .optimizers import Optimizer
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: {type(optimizer).__name__} is not a minidae Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in group for group in optimizer.param_groups):
            raise KeyError(f"{type(self).__name__}: resuming with last_epoch={last_epoch} needs 'initial_lr' in every "
                           f"parameter group (load the optimiser's state first)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._initial = True
        self.step()
        self._initial = False

    def get_lr(self):
        """The lrs for step ``last_epoch``."""
        raise NotImplementedError(f"{type(self).__name__} does not define get_lr")

    def step(self):
        """Advance one step (an epoch, usually) and write the new lrs into the optimiser's groups."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The lrs the last step set, one per parameter group."""
        return self._last_lr

    def state_dict(self):
        """Everything but the optimiser (PyTorch's layout)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned."""
        self.__dict__.update(state_dict)

    def _lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """lr = initial lr * gamma ** (epoch // step_size): multiplied by gamma every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = int(step_size), gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        """The current lrs, times gamma at every non-zero multiple of step_size."""
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]


class MultiStepLR(LRScheduler):
    """lr multiplied by gamma at each epoch of ``milestones`` (by gamma ** k where a milestone is listed k times)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones, self.gamma = Counter(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        """The current lrs, times gamma ** k at a milestone."""
        if self.last_epoch not in self.milestones:
            return self._lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._lrs()]


class ExponentialLR(LRScheduler):
    """lr = initial lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        """The current lrs times gamma (unchanged at the constructor's step)."""
        return self._lrs() if self._initial else [lr * self.gamma for lr in self._lrs()]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial lr - eta_min) (1 + cos(pi epoch / T_max)) / 2, in PyTorch's recursive form
    (which keeps going past T_max, back up and down again)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        """The next lrs along the cosine, from the current ones."""
        t, T, eta = self.last_epoch, self.T_max, self.eta_min
        if self._initial:
            return self._lrs()
        if self._step_count == 1 and t > 0:
            return [eta + (base - eta) * (1 + math.cos(t * math.pi / T)) / 2 for base in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [lr + (base - eta) * (1 - math.cos(math.pi / T)) / 2 for base, lr in zip(self.base_lrs, self._lrs())]
        return [(1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * (lr - eta) + eta
                for lr in self._lrs()]


class LambdaLR(LRScheduler):
    """lr = initial lr * lr_lambda(epoch); ``lr_lambda`` is a function, or a list of one per group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        groups = len(optimizer.param_groups)
        self.lr_lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * groups
        if len(self.lr_lambdas) != groups:
            raise ValueError(f"LambdaLR: expected {groups} lr_lambdas (one per parameter group), got "
                             f"{len(self.lr_lambdas)}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        """Each group's initial lr times its lambda of the epoch."""
        return [base * f(self.last_epoch) for f, base in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self):
        """As LRScheduler's, without the lambdas (functions are not state, as in PyTorch)."""
        return {key: value for key, value in super().state_dict().items() if key != "lr_lambdas"}


class ReduceLROnPlateau(LRScheduler):
    """lr = max(lr * factor, min_lr) when a metric (``step(metric)``) has not improved for ``patience`` epochs,
    as torch.optim.lr_scheduler.ReduceLROnPlateau: "improved" is below best * (1 - threshold) in mode "min" with
    threshold_mode "rel" (above best * (1 + threshold) in mode "max"; best -/+ threshold with "abs"); after a
    reduction, ``cooldown`` epochs pass before counting again; a change smaller than ``eps`` is not made."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0, eps=1e-8):
        if factor >= 1.0:
            raise ValueError("ReduceLROnPlateau: factor should be < 1.0")
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max' and threshold_mode 'rel' or 'abs', got "
                             f"{mode!r} and {threshold_mode!r}")
        from .optimizers import Optimizer
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau: {type(optimizer).__name__} is not a minidae Optimizer")
        groups = len(optimizer.param_groups)
        self.min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * groups
        if len(self.min_lrs) != groups:
            raise ValueError(f"ReduceLROnPlateau: expected {groups} min_lrs, got {len(self.min_lrs)}")
        self.optimizer, self.mode, self.factor, self.patience = optimizer, mode, factor, patience
        self.threshold, self.threshold_mode, self.cooldown, self.eps = threshold, threshold_mode, cooldown, eps
        self.cooldown_counter, self.num_bad_epochs, self.last_epoch = 0, 0, 0
        self.best = math.inf if mode == "min" else -math.inf
        self._last_lr = self._lrs()

    def step(self, metrics):
        """Record this epoch's metric (a number, or a 0-d array), reducing the lrs after ``patience`` bad epochs."""
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                new_lr = max(group["lr"] * self.factor, min_lr)
                if group["lr"] - new_lr > self.eps:
                    group["lr"] = new_lr
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = self._lrs()

    def _is_better(self, value):
        if self.mode == "min":
            return value < (self.best * (1 - self.threshold) if self.threshold_mode == "rel" else
                            self.best - self.threshold)
        return value > (self.best * (1 + self.threshold) if self.threshold_mode == "rel" else
                        self.best + self.threshold)
