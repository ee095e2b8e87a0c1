"""The reference: the same network and recipe in PyTorch, writing the same metrics.json fields.

    python benchmarks/torch_reference.py [--device cpu|cuda] [--epochs 10] [--out runs/torch-reference]

The batches, their order and their noise come from minidae's own pipeline (NumPy backend,
the same seed), and the initial weights are minidae's for that seed (``--torch-init``
uses PyTorch's own initialisation instead), so the two runs differ only in the arithmetic
of the framework. PyTorch is needed here and in the tests, nowhere else.
"""
import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from minidae import backend, models
from minidae.data import NoisyBatches
from minidae.train import RECIPE, TrainConfig, evaluate, load_split


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


class AsNumpyModel:
    """Lets minidae's evaluator call a torch model: NumPy in, NumPy out."""

    def __init__(self, model, device):
        self.model, self.device = model, device

    def __call__(self, x):
        with torch.no_grad():
            return self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device)).cpu().numpy()


def main(argv=None):
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--noise", default=defaults.noise)
    parser.add_argument("--noise-level", type=float, default=defaults.noise_level)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--test-samples", type=int, default=None)
    parser.add_argument("--dataset", default=defaults.dataset)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/torch-reference")
    parser.add_argument("--torch-init", action="store_true", help="PyTorch's own initial weights (torch.manual_seed)")
    args = parser.parse_args(argv)

    backend.use("numpy", seed_value=args.seed)
    torch.manual_seed(args.seed)
    model = TorchConvDAE()
    if not args.torch_init:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in models.conv_dae().state_dict().items()})
    model.to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)
    train_images, _ = load_split(args.dataset, "train", args.data_dir, args.train_samples)
    test_images, _ = load_split(args.dataset, "test", args.data_dir, args.test_samples)
    batches = NoisyBatches(train_images, args.batch_size, args.noise, args.noise_level, seed=args.seed)
    evaluator = AsNumpyModel(model, args.device)

    losses, epochs, epoch_seconds, started = [], [], [], time.perf_counter()
    for epoch in range(args.epochs):
        start, epoch_losses = time.perf_counter(), []
        for noisy, clean in batches.epoch(epoch):
            noisy, clean = torch.from_numpy(noisy).to(args.device), torch.from_numpy(clean).to(args.device)
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(noisy), clean)
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.detach())
        epoch_losses = torch.stack(epoch_losses).cpu().double().numpy().tolist()
        seconds = time.perf_counter() - start
        test = evaluate(evaluator, test_images, args.noise, args.noise_level, args.seed)
        losses += epoch_losses
        epoch_seconds.append(seconds)
        epochs.append({"epoch": epoch + 1, "train_loss": float(np.mean(epoch_losses)), "test_loss": test["mse_denoised"]})
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {epochs[-1]['train_loss']:.5f}, test loss "
              f"{test['mse_denoised']:.5f}, {seconds:.1f} s", flush=True)
    final = evaluate(evaluator, test_images, args.noise, args.noise_level, args.seed)
    recipe = {key: getattr(args, key) for key in RECIPE + ("epochs",)}
    recipe.update(loss="mse", optimizer="adam", betas=[0.9, 0.999])
    result = {"recipe": recipe, "backend": f"torch-{args.device}", "seed": args.seed,
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
