"""An MNIST digit classifier in minidae: two convolutions with max pooling and a linear layer, trained with
cross-entropy and Adam, as a PyTorch user would write it; prints the test accuracy.

    python examples/train_classifier.py [--epochs 2] [--batch-size 64] [--lr 1e-3] [--backend numpy|cupy]
                                        [--train-samples N] [--test-samples N] [--data-dir DIR]
"""
import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

import minidae
from minidae import backend, nn, optim
from minidae.data import DatasetUnavailable, load_mnist


def classifier():
    """(N, 1, 28, 28) images -> (N, 10) logits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # (N, 16, 14, 14)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (N, 32, 7, 7)
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10))                       # (N, 10)


def images(uint8):
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1], on the active backend."""
    return backend.xp.asarray(uint8[:, None], dtype=np.float32) / 255


def accuracy(model, x, labels, batch_size=1000):
    """The fraction of ``x`` whose largest logit is its label (eval mode, nothing kept for a backward)."""
    correct = 0
    with minidae.evaluating(model):
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])
            correct += int((logits.argmax(axis=1) == labels[start:start + batch_size]).sum())
    return correct / len(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    parser.add_argument("--train-samples", type=int, default=None, metavar="N")
    parser.add_argument("--test-samples", type=int, default=None, metavar="N")
    parser.add_argument("--data-dir", default=None, metavar="DIR")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        backend.use(args.backend, seed_value=args.seed)
        train_x, train_y = load_mnist("train", root=args.data_dir)
        test_x, test_y = load_mnist("test", root=args.data_dir)
    except (backend.BackendUnavailable, DatasetUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    train_x, train_y = images(train_x[:args.train_samples]), backend.xp.asarray(train_y[:args.train_samples])
    test_x, test_y = images(test_x[:args.test_samples]), backend.xp.asarray(test_y[:args.test_samples])

    model = classifier()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for epoch in range(args.epochs):
        started, order = time.perf_counter(), backend.rng().permutation(len(train_x))
        batches = range(0, len(train_x) - args.batch_size + 1, args.batch_size)
        for start in tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False):
            index = order[start:start + args.batch_size]
            optimizer.zero_grad()
            loss = criterion(model(train_x[index]), train_y[index])
            model.backward(criterion.backward())
            optimizer.step()
        scheduler.step()
        print(f"epoch {epoch + 1}/{args.epochs}: last batch loss {float(loss):.4f}, lr now {scheduler.get_last_lr()[0]:g}, "
              f"{time.perf_counter() - started:.1f} s, test accuracy {accuracy(model, test_x, test_y):.4f}")
    print(f"test accuracy {accuracy(model, test_x, test_y):.4f} ({len(test_x)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
