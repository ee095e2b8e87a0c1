"""Train the specification's convolutional denoising autoencoder (docs/spec.md) on noisy MNIST.

    python examples/train_conv_dae.py                       # the spec's recipe: 10 epochs, batch 64, Adam 1e-3
    python examples/train_conv_dae.py --backend cupy        # the same on the GPU
    python examples/train_conv_dae.py --epochs 1 --train-samples 4096 --test-samples 256   # a quick look

The work lives in minidae.train (the trainer and evaluator); this script only reads the
options. Everything it writes goes to --out (default: a new runs/<timestamp>; a directory that holds
another run is refused unless --force). Every failure ends in one line and a non-zero exit.
"""
import argparse
import sys

from minidae.cli import add_train_arguments, run_train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return run_train(add_train_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
