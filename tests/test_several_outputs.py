"""A module with several outputs, end to end: docs/usage.md's VAE (reconstruction, mean, log-variance, KL term)
against the same VAE in PyTorch, float64, with the same eps."""
import pathlib
import re

import numpy as np
import pytest

from minidae import backend, gradcheck, optim
from parity import relative_error

torch = pytest.importorskip("torch", reason="the VAE is compared with PyTorch: pip install -e .[test]")
USAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "usage.md"


def usage_vae():
    """The namespace docs/usage.md's VAE block defines (VAE, vae_step)."""
    block = next(b for b in re.findall(r"```python\n(.*?)```", USAGE.read_text(), re.S) if "class VAE" in b)
    namespace = {}
    exec(compile(block, "docs/usage.md", "exec"), namespace)
    return namespace


class TorchVAE(torch.nn.Module):
    def __init__(self, features, hidden, latent):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU())
        self.mean, self.logvar = torch.nn.Linear(hidden, latent), torch.nn.Linear(hidden, latent)
        self.decoder = torch.nn.Sequential(torch.nn.Linear(latent, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, features), torch.nn.Sigmoid())

    def forward(self, x, eps):
        h = self.encoder(x)
        mean, logvar = self.mean(h), self.logvar(h)
        return self.decoder(mean + torch.exp(0.5 * logvar) * eps), mean, logvar


def test_the_usage_vae_trains_as_pytorchs(xp):
    namespace = usage_vae()
    torch.manual_seed(0)
    theirs = TorchVAE(20, 12, 3).double()
    ours = namespace["VAE"](20, 12, 3).to(np.float64)
    ours.load_state_dict(theirs.state_dict())
    rng = np.random.default_rng(0)
    x, eps = rng.uniform(size=(5, 20)), rng.normal(size=(5, 3))
    # one forward and backward, the gradients compared
    recon, mean, logvar = ours(xp.asarray(x), eps=xp.asarray(eps))
    xt = torch.tensor(x, requires_grad=True)
    t_recon, t_mean, t_logvar = theirs(xt, torch.tensor(eps))
    n = x.shape[0]
    t_loss = (torch.nn.functional.binary_cross_entropy(t_recon, xt.detach(), reduction="sum") / n
              - 0.5 * (1 + t_logvar - t_mean ** 2 - t_logvar.exp()).sum() / n)
    t_loss.backward()
    bce = namespace["nn"].BCELoss(reduction="sum")
    bce(recon, xp.asarray(x))
    mean_host, logvar_host = backend.to_numpy(mean), backend.to_numpy(logvar)
    dx = ours.backward((bce.backward() / n, xp.asarray(mean_host / n), xp.asarray(0.5 * (np.exp(logvar_host) - 1) / n)))
    for got, expected in ((recon, t_recon), (mean, t_mean), (logvar, t_logvar)):
        assert relative_error(got, expected.detach().numpy()) < 1e-14
    assert relative_error(dx, xt.grad.numpy()) < 1e-13
    reference = dict(theirs.named_parameters())
    for key, p in ours.named_parameters():
        assert relative_error(p.grad, reference[key].grad.numpy()) < 1e-13, key


def test_the_usage_vae_step_lowers_its_loss_and_gradchecks():
    namespace = usage_vae()
    backend.use("numpy", seed_value=1)
    vae = namespace["VAE"](16, 8, 2).to(np.float64)
    rng = np.random.default_rng(2)
    prototypes = (rng.uniform(size=(2, 16)) > 0.5).astype(np.float64)
    x = np.clip(prototypes[rng.integers(0, 2, 32)] + rng.normal(scale=0.05, size=(32, 16)), 0, 1)  # two kinds
    optimizer = optim.Adam(vae.parameters(), lr=1e-2)
    losses = [namespace["vae_step"](vae, optimizer, x) for _ in range(80)]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
    eps = np.random.default_rng(3).normal(size=(4, 2))

    class FixedNoise(namespace["VAE"]):  # the same eps at every call: a function of x alone, for the check
        def forward(self, ctx, x):
            return super().forward(ctx, x, eps=eps)

    result = gradcheck(FixedNoise(16, 8, 2), np.random.default_rng(4).uniform(size=(4, 16)), max_elements=20)
    assert result, str(result)
