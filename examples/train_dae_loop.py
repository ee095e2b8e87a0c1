"""The denoising autoencoder's training loop, nothing else: the file to read first.

The specification's recipe (docs/spec.md) as a PyTorch user writes it: MNIST in [0, 1], Gaussian noise of std
0.5 clipped to [0, 1], the conv DAE, MSE, Adam (lr 1e-3, weight decay 1e-5), batches of 64; then the test MSE.
`python -m minidae train` runs this same loop with checkpoints, plots and metrics around it.

    python examples/train_dae_loop.py [--epochs 1] [--train-samples 60000] [--test-samples 10000]
"""
import argparse

import numpy as np

import minidae
from minidae import backend, models, nn, optim
from minidae.data import load_mnist
from minidae.data.noise import gaussian

parser = argparse.ArgumentParser(description="Train the spec's denoising autoencoder in a plain loop.")
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--train-samples", type=int, default=60000)
parser.add_argument("--test-samples", type=int, default=10000)
args = parser.parse_args()

backend.use("numpy", seed_value=0)                       # weights, shuffling and noise from seed 0
train_images = load_mnist("train")[0][:args.train_samples, None].astype(np.float32) / 255  # (N, 1, 28, 28)
test_images = load_mnist("test")[0][:args.test_samples, None].astype(np.float32) / 255
model, criterion = models.conv_dae(), nn.MSELoss()
optimizer = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
rng = np.random.default_rng(0)

for epoch in range(args.epochs):
    order = rng.permutation(len(train_images))
    for start in range(0, len(order), 64):
        clean = train_images[order[start:start + 64]]
        noisy = gaussian(clean, 0.5, rng=rng)            # the input; the clean image is the target
        optimizer.zero_grad()                            # no gradient until the backward gives one
        loss = criterion(model(noisy), clean)            # forward: every layer keeps what its backward needs
        model.backward(criterion.backward(), input_grad=False)  # dL/dpred back through every layer, into .grad
        optimizer.step()                                 # Adam updates every parameter from its .grad
    noisy, total = gaussian(test_images, 0.5, rng=np.random.default_rng(1)), 0.0
    with minidae.evaluating(model):                      # eval mode, and nothing kept for a backward
        for i in range(0, len(test_images), 1000):
            total += float(criterion(model(noisy[i:i + 1000]), test_images[i:i + 1000])) * len(noisy[i:i + 1000])
    test_mse, noisy_mse = total / len(test_images), float(((noisy - test_images) ** 2).mean())
    print(f"epoch {epoch + 1}: last batch loss {float(loss):.5f}; test MSE noisy {noisy_mse:.5f} -> "
          f"denoised {test_mse:.5f}")
