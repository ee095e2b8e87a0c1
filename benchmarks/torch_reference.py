"""The reference: every minidae model's PyTorch twin, trained with the same recipe, writing the same metrics.json fields.

    python benchmarks/torch_reference.py [--preset NAME] [--device cpu|cuda] [--epochs N] [--out DIR]

The batches, their order and their noise come from minidae's own pipeline (NumPy backend, the
same seed), and the initial weights are minidae's for that seed (``--torch-init`` uses PyTorch's
own initialisation instead), so the two runs differ only in the arithmetic of the framework.
PyTorch is needed here and in the tests, nowhere else. minidae is imported inside the functions that use it,
so that ``TWINS`` and ``torch_optimizer`` come without it (bench.py's PyTorch processes import torch alone).
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch


class TorchConvDAE(torch.nn.Module):
    """minidae.models.ConvDAE in PyTorch, attribute for attribute (so state_dict keys agree)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, stride=2, padding=2)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = torch.nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.l1 = torch.nn.Linear(1024, 256)
        self.l2 = torch.nn.Linear(256, 1024)
        self.conv4 = torch.nn.ConvTranspose2d(64, 32, 3, stride=3, padding=2)
        self.conv5 = torch.nn.ConvTranspose2d(32, 16, 3, stride=3, padding=4)
        self.conv6 = torch.nn.ConvTranspose2d(16, 1, 3, stride=2, padding=3, output_padding=1)

    def forward(self, x):
        relu = torch.relu
        x = relu(self.conv3(relu(self.conv2(relu(self.conv1(x))))))
        x = self.l2(self.l1(x.flatten(1))).reshape(-1, 64, 4, 4)
        return torch.sigmoid(self.conv6(relu(self.conv5(relu(self.conv4(x))))))


class TorchDense(torch.nn.Module):
    """The fully connected models (fc_dae, dense_ae, fc_ae): Linear layers, ReLU between, Sigmoid out."""

    def __init__(self, names, sizes):
        super().__init__()
        self.names = names
        for name, n_in, n_out in zip(names, sizes, sizes[1:]):
            setattr(self, name, torch.nn.Linear(n_in, n_out))

    def forward(self, x):
        x = x.reshape(-1, 784)
        for index, name in enumerate(self.names):
            x = getattr(self, name)(x)
            x = torch.relu(x) if index < len(self.names) - 1 else torch.sigmoid(x)
        return x.reshape(-1, 1, 28, 28)


class TorchConvAEPool(torch.nn.Module):
    """minidae.models.ConvAEPool in PyTorch (the report's conv autoencoder)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(64, 64, 3, padding=1)
        self.conv4 = torch.nn.Conv2d(64, 32, 3, padding=1)
        self.conv5 = torch.nn.Conv2d(32, 1, 3, padding=1)
        self.pool, self.up = torch.nn.MaxPool2d(2), torch.nn.Upsample(scale_factor=2)

    def forward(self, x):
        relu = torch.relu
        x = self.pool(relu(self.conv2(self.pool(relu(self.conv1(x))))))
        x = self.up(relu(self.conv4(self.up(relu(self.conv3(x))))))
        return torch.sigmoid(self.conv5(x))


class TorchConvDenoiser(torch.nn.Module):
    """The reference's ConvDenoiser, as in references/conv_denoiser_notes.md."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 16, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(16, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2, 2)
        self.t_conv1 = torch.nn.ConvTranspose2d(8, 8, 3, stride=2)
        self.t_conv2 = torch.nn.ConvTranspose2d(8, 16, 2, stride=2)
        self.t_conv3 = torch.nn.ConvTranspose2d(16, 32, 2, stride=2)
        self.conv_out = torch.nn.Conv2d(32, 1, 3, padding=1)

    def forward(self, x):
        relu = torch.relu
        x = self.pool(relu(self.conv1(x)))
        x = self.pool(relu(self.conv2(x)))
        x = self.pool(relu(self.conv3(x)))
        x = relu(self.t_conv3(relu(self.t_conv2(relu(self.t_conv1(x))))))
        return torch.sigmoid(self.conv_out(x))


TWINS = {
    "conv_dae": TorchConvDAE,
    "fc_dae": lambda: TorchDense(["fc1", "fc2", "fc3", "fc4", "fc5", "fc6"], [784, 512, 256, 128, 256, 512, 784]),
    "dense_ae": lambda: TorchDense(["fc1", "fc2", "fc3", "fc4", "fc5", "fc6"], [784, 128, 64, 32, 64, 128, 784]),
    "fc_ae": lambda: TorchDense(["fcEncoder1", "fcEncoder2", "fcDecoder1", "fcDecoder2"], [784, 256, 128, 256, 784]),
    "conv_ae_pool": TorchConvAEPool,
    "conv_denoiser": TorchConvDenoiser,
}


def torch_optimizer(config, params):
    """The recipe's optimiser in PyTorch (config: a minidae TrainConfig, or anything with its optimizer, lr,
    momentum and weight_decay attributes), as minidae.train.make_optimizer builds ours."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def twin(name, seed=None):
    """The PyTorch twin of minidae model ``name``, with minidae's initial weights for ``seed`` if given."""
    model = TWINS[name]()
    if seed is not None:
        from minidae import backend, models
        backend.use("numpy", seed_value=seed)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in models.build(name).state_dict().items()})
    return model


class AsNumpyModel:
    """Lets minidae's evaluator call a torch model: NumPy in, NumPy out."""

    def __init__(self, model, device):
        self.model, self.device = model, device

    def __call__(self, x):
        with torch.no_grad():
            return self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device)).cpu().numpy()

    @property
    def training(self):
        return self.model.training

    def train(self, mode=True):
        """The torch model's train/eval switch (minidae's evaluator puts a model in eval mode and back)."""
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def named_modules(self):
        """Itself only: minidae.evaluating sets and restores the mode of every module this yields."""
        yield "", self


def main(argv=None):
    from minidae import backend
    from minidae.data import NoisyBatches
    from minidae.presets import PRESETS
    from minidae.train import RECIPE, TrainConfig, evaluate, load_split
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="conv_dae")
    parser.add_argument("--device", default="cpu")
    for flag, kind in (("epochs", int), ("batch-size", int), ("lr", float), ("weight-decay", float),
                       ("momentum", float), ("noise-level", float)):
        parser.add_argument(f"--{flag}", type=kind, default=None, help="default: the preset's")
    parser.add_argument("--noise", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--test-samples", type=int, default=None)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/torch-reference")
    parser.add_argument("--eval-every", type=int, default=1, help="test loss every N epochs (the last always)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--torch-init", action="store_true", help="PyTorch's own initial weights (torch.manual_seed)")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True): the CPU's flush-to-zero modes (issue 26's comparison)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal and not torch.set_flush_denormal(True):
        print("torch.set_flush_denormal(True) is not supported on this CPU", file=sys.stderr)
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "momentum", "noise",
                                               "noise_level") if getattr(args, k) is not None}
    config = TrainConfig.from_preset(args.preset, seed=args.seed, train_samples=args.train_samples,
                                     test_samples=args.test_samples, dataset=args.dataset, **overrides)

    torch.manual_seed(config.seed)
    model = TWINS[config.model]() if args.torch_init else twin(config.model, config.seed)
    model.to(args.device)
    optimizer = torch_optimizer(config, model.parameters())
    loss_fn = {"mse": torch.nn.functional.mse_loss, "bce": torch.nn.functional.binary_cross_entropy}[config.loss]
    backend.use("numpy", seed_value=config.seed)
    train_images, _ = load_split(config.dataset, "train", args.data_dir, config.train_samples)
    test_images, _ = load_split(config.dataset, "test", args.data_dir, config.test_samples)
    batches = NoisyBatches(train_images, config.batch_size, config.noise, config.noise_level, seed=config.seed,
                           clip=config.clip)
    evaluator = AsNumpyModel(model, args.device)

    losses, epochs, epoch_seconds, started = [], [], [], time.perf_counter()
    for epoch in range(config.epochs):
        start, epoch_losses = time.perf_counter(), []
        for noisy, clean in batches.epoch(epoch):
            noisy, clean = torch.from_numpy(noisy).to(args.device), torch.from_numpy(clean).to(args.device)
            optimizer.zero_grad()
            loss = loss_fn(model(noisy), clean)
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.detach())
        epoch_losses = torch.stack(epoch_losses).cpu().double().numpy().tolist()
        seconds = time.perf_counter() - start
        losses += epoch_losses
        epoch_seconds.append(seconds)
        entry = {"epoch": epoch + 1, "train_loss": float(np.mean(epoch_losses))}
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == config.epochs:
            entry["test_loss"] = evaluate(evaluator, test_images, config.noise, config.noise_level, config.seed,
                                          clip=config.clip)["mse_denoised"]
        epochs.append(entry)
        print(f"epoch {epoch + 1}/{config.epochs}: train loss {entry['train_loss']:.5f}"
              + (f", test loss {entry['test_loss']:.5f}" if "test_loss" in entry else "") + f", {seconds:.1f} s",
              flush=True)
    final = evaluate(evaluator, test_images, config.noise, config.noise_level, config.seed, clip=config.clip)
    recipe = {key: getattr(config, key) for key in RECIPE + ("epochs",)}
    result = {"model": config.model, "parameters": sum(p.numel() for p in model.parameters()), "recipe": recipe,
              "backend": f"torch-{args.device}", "seed": config.seed,
              "versions": {"torch": torch.__version__, "python": platform.python_version(), "numpy": np.__version__},
              "initial_weights": "torch" if args.torch_init else "minidae", "epochs": epochs,
              "epoch_seconds": epoch_seconds, "wall_seconds": time.perf_counter() - started,
              "test_images": len(test_images), "test": final}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"test MSE noisy {final['mse_noisy']:.5f} -> denoised {final['mse_denoised']:.5f}; wrote {args.out}/metrics.json")


if __name__ == "__main__":
    main()
