"""Flat arrays for Adam's replacements (minidae.speed.cpu and minidae.speed.cuda): every trainable parameter's
data, gradient, moments and step count as views into one array per kind, so one pass (one kernel) updates them
all. The values are the optimiser's own; only where they are stored changes."""

from ..backend import CORE

__all__ = ["FlatAdam", "zero_grads_for"]


class FlatAdam:
    """The trainable parameters of an Adam, group by group, packed into flat arrays of one array library.

    ``arrays`` maps "data", "grad", "exp_avg" and "exp_avg_sq" to the flat arrays; ``steps`` holds one step count
    per parameter (each ``state[p]["step"]`` is a 0-d view of it); ``groups`` lists, for every parameter group
    with trainable parameters, (group, first element, end element, first parameter, end parameter).
    Reassigning any of those arrays (``p.data = ...``, ``Module.to``, ``load_state_dict``), freezing or
    unfreezing a parameter, or adding a group breaks the packing; :meth:`current` notices and packs again,
    copying the values in.
    """

    KEYS = ("data", "grad", "exp_avg", "exp_avg_sq")

    def __init__(self, optimizer, xp):
        self.xp, self.params, self.groups, self.scratch_arrays = xp, [], [], []
        elements = 0
        for group in optimizer.param_groups:
            trainable = [p for p in group["params"] if p.requires_grad]
            if trainable:
                size = sum(p.data.size for p in trainable)
                self.groups.append((group, elements, elements + size, len(self.params),
                                    len(self.params) + len(trainable)))
                self.params += trainable
                elements += size
        dtype = self.params[0].data.dtype
        self.arrays = {key: xp.zeros(elements, dtype=dtype) for key in self.KEYS}
        self.steps = xp.zeros(len(self.params), dtype="int64")
        self.grad_views, offset = [], 0
        for index, p in enumerate(self.params):
            state = optimizer.state_of(p)
            for key in self.KEYS:
                view = self.arrays[key][offset:offset + p.data.size].reshape(p.data.shape)
                view[...] = getattr(p, key) if key in ("data", "grad") else state[key]
                if key in ("data", "grad"):
                    setattr(p, key, view)
                    if key == "grad":
                        self.grad_views.append(view)
                else:
                    state[key] = view
            self.steps[index] = state["step"]
            state["step"] = self.steps[index:index + 1].reshape(())
            offset += p.data.size
        self.views = self.snapshot(optimizer)

    @classmethod
    def snapshot(cls, optimizer):
        """What the packing depends on: the trainable parameters in order, and the identity of their arrays."""
        trainable = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        return [(p, p.data, p.grad, *(optimizer.state.get(p, {}).get(key) for key in ("exp_avg", "exp_avg_sq",
                                                                                    "step")))
                for p in trainable]

    @classmethod
    def current(cls, optimizer, xp, pack=True):
        """The optimiser's packing for library ``xp``, (re)made if ``pack``; None where its trainable parameters
        cannot share flat arrays (none, not all ``xp`` arrays, or not of one floating dtype) or, with
        ``pack=False``, they do not now."""
        flat = optimizer.__dict__.get("_flat")
        if flat is not None and flat.xp is xp and cls._same(cls.snapshot(optimizer), flat.views):
            return flat
        if not pack:
            return None
        trainable = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        if any(p.grad is None for p in trainable):
            return None
        arrays = [a for p in trainable for a in (p.data, p.grad)]
        dtypes = {a.dtype for a in arrays}
        if (not trainable or len(dtypes) != 1 or dtypes.pop().kind != "f"
                or not all(type(a) is xp.ndarray for a in arrays)):
            return None
        flat = optimizer._flat = cls(optimizer, xp)
        return flat

    @staticmethod
    def _same(now, then):
        return len(now) == len(then) and all(a is b for x, y in zip(now, then) for a, b in zip(x, y))

    def group_steps(self):
        """The step count shared by each group's parameters (a host read), or None for a group whose parameters
        have taken different numbers of steps (one was frozen for a while)."""
        steps = self.xp.asnumpy(self.steps) if hasattr(self.xp, "asnumpy") else self.steps
        return [int(steps[i]) if (steps[i:j] == steps[i]).all() else None for _, _, _, i, j in self.groups]

    def zero_grads(self, optimizer):
        """Every gradient zeroed: one fill of the flat gradient array (each parameter's gradient its view again),
        and the frozen parameters' one by one."""
        self.arrays["grad"].fill(0)
        for p, view in zip(self.params, self.grad_views):
            p.grad = view
        for p in optimizer.params:
            if not p.requires_grad:
                p.zero_grad(set_to_none=False)


def zero_grads_for(xp):
    """The replacement of optim.zero_grads for library ``xp`` (numpy or cupy): with ``set_to_none=False``, one fill
    of the flat gradient array where the gradients share Adam's flat arrays; otherwise the core function."""
    def zero_grads(optimizer, set_to_none=True):
        """optim.zero_grads as one fill of the flat gradient array, where the gradients share one."""
        flat = None if set_to_none else FlatAdam.current(optimizer, xp, pack=False)
        if flat is None:
            return CORE["zero_grads"](optimizer, set_to_none)
        return flat.zero_grads(optimizer)
    return zero_grads
