"""What a careful PyTorch user met using minidae's nn and optim, each compared with PyTorch in float64: a defect
found, a test that failed, and the smallest fix."""
import numpy as np
import pytest

from minidae import nn, optim

torch = pytest.importorskip("torch", reason="these findings are compared with PyTorch: pip install -e .[test]")


class _Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(3, 2), nn.Linear(2, 2)
        self.register_buffer("scale", np.ones(2, np.float32))


def test_del_unregisters_a_submodule_parameter_or_buffer_as_torch():
    ours = _Two()
    del ours.head                       # keep the body only, as for feature extraction
    del ours.body.bias
    del ours.scale
    assert list(ours.state_dict()) == ["body.weight"]
    assert len(ours.parameters()) == 1 and list(ours.named_buffers()) == []
    assert [name for name, _ in ours.named_modules()] == ["", "body"]
    with pytest.raises(AttributeError):
        ours.head


def test_an_array_assigned_to_a_parameter_or_a_number_to_a_submodule_is_refused_as_torch():
    ours, theirs = _Two(), torch.nn.Linear(3, 2)
    with pytest.raises(TypeError):
        theirs.weight = torch.ones(2, 3)
    with pytest.raises(TypeError, match=r"weight.*Parameter.*\.data"):
        ours.body.weight = np.ones((2, 3), np.float32)   # was: silently no longer a parameter, forward then failed
    with pytest.raises(TypeError, match="head"):
        ours.head = np.ones(2)
    assert list(ours.state_dict()) == ["scale", "body.weight", "body.bias", "head.weight", "head.bias"]
    ours.body.bias = None                                # None stays allowed, as in PyTorch
    ours.head = nn.Identity()
    assert list(ours.state_dict()) == ["scale", "body.weight"]


@pytest.mark.parametrize("key", ["keys", "train", "forward", "backward"])
def test_a_module_dict_key_that_would_hide_a_method_is_refused_as_torch(key):
    if key != "backward":  # minidae's own method; PyTorch's modules have none
        with pytest.raises(KeyError, match="already exists"):
            torch.nn.ModuleDict({key: torch.nn.ReLU()})
    with pytest.raises(KeyError, match=f"{key}.*already exists"):  # was: md.keys() called the ReLU
        nn.ModuleDict({key: nn.ReLU()})
    with pytest.raises(KeyError, match="already exists"):
        nn.Module().add_module("train", nn.ReLU())
    heads = nn.ModuleDict({"a": nn.ReLU()})
    heads["a"] = nn.Tanh()                                      # replacing a module stays allowed
    assert heads.keys() == ["a"] and isinstance(heads["a"], nn.Tanh)


def test_a_loaded_optimiser_state_brings_initial_lr_back_so_a_scheduler_can_resume_as_torch():
    def run(nn_module, optim_module):
        layer = nn_module.Linear(2, 2)
        opt = optim_module.SGD(layer.parameters(), lr=0.1)
        scheduler = optim_module.lr_scheduler.StepLR(opt, 2, gamma=0.5)
        for _ in range(3):
            scheduler.step()
        saved = opt.state_dict()
        resumed = optim_module.SGD(layer.parameters(), lr=0.1)
        resumed.load_state_dict(saved)       # was: initial_lr dropped, so the next line raised a KeyError
        again = optim_module.lr_scheduler.StepLR(resumed, 2, gamma=0.5, last_epoch=scheduler.last_epoch)
        again.step()
        return resumed.param_groups[0]["initial_lr"], again.get_last_lr()
    assert run(nn, optim) == run(torch.nn, torch.optim)
