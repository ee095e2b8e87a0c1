"""The colour run of docs/results.md: the spec network with 3 channels on patches of real photographs, minidae
next to its PyTorch twin.

    python docs/tools/colour_run.py [--epochs 10] [--out runs/colour-photos] [--images docs/images]

1. Patches: scikit-image's sample photographs (``skimage.data``), each scaled so that its shorter side is
   ``--side`` pixels (224) with Pillow's Lanczos filter, cut into 28 x 28 patches every 7 pixels (they overlap);
   patches that are almost flat (standard deviation of their levels below 4 of 255: the black sky of the
   Hubble field, the retina's border) are left out. Training photos and test photos are different photos
   (TRAIN, TEST); at most ``--test-patches`` test patches, chosen by the seed. Each patch is a PNG in
   ``OUT/patches/{train,test}/<photo>/``, its name a random number, so a photo's first patches are from
   anywhere in it.
2. minidae: ``python -m minidae train --data OUT/patches/train --test-data OUT/patches/test --channels 3`` with
   the specification's recipe otherwise (Adam 1e-3, weight decay 1e-5, batch 64, Gaussian noise 0.5 clipped,
   seed 0), into ``OUT/minidae``.
3. PyTorch: benchmarks/torch_reference.py's twin of the spec network with conv1 taking and conv6 giving 3
   channels, the same initial weights (minidae's for the seed), the same batches and noise (minidae's
   NoisyBatches on the very images the run read), the same optimiser, evaluated by the same code (minidae's
   ``evaluate``), into ``OUT/torch/metrics.json``.

It prints the table docs/results.md shows and copies the minidae run's denoising.png and layers.png to
``--images`` as denoising_colour.png and layers_colour.png (in 256 colours).
"""
import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRAIN = ("astronaut", "coffee", "immunohistochemistry", "retina", "hubble_deep_field")
TEST = ("chelsea", "rocket", "stereo_motorcycle")


def photo(name):
    """A skimage.data photograph as uint8 RGB (H, W, 3) (the stereo pair's left image)."""
    import skimage.data
    image = getattr(skimage.data, name)()
    return (image[0] if isinstance(image, tuple) else image)[..., :3]


def patches(name, side, size=28, stride=7, flat=4.0):
    """The patches of one photograph (module docstring), uint8 (N, size, size, 3)."""
    from PIL import Image
    image = Image.fromarray(photo(name))
    scale = side / min(image.size)
    image = np.asarray(image.resize((round(image.size[0] * scale), round(image.size[1] * scale)),
                                    Image.Resampling.LANCZOS))
    cut = [image[top:top + size, left:left + size] for top in range(0, image.shape[0] - size + 1, stride)
           for left in range(0, image.shape[1] - size + 1, stride)]
    return np.stack([p for p in cut if p.std() >= flat])


def write_patches(root, side, test_patches, seed):
    """OUT/patches/{train,test}/<photo>/<random number>.png; returns {split: {photo: count}}."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    counts = {}
    for split, names in (("train", TRAIN), ("test", TEST)):
        found = {name: patches(name, side) for name in names}
        if split == "test":  # at most test_patches, in proportion to each photo's
            total = sum(len(p) for p in found.values())
            found = {name: p[rng.permutation(len(p))[:max(1, round(len(p) * min(1, test_patches / total)))]]
                     for name, p in found.items()}
        counts[split] = {name: len(p) for name, p in found.items()}
        for name, cut in found.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for number, patch in zip(rng.permutation(len(cut)), cut):
                Image.fromarray(patch).save(folder / f"{number:05d}.png")
    return counts


def torch_twin_run(config, out):
    """The PyTorch twin of the spec network with 3 channels, trained as minidae trained (module docstring)."""
    import torch
    from minidae import backend, models
    from minidae.data import NoisyBatches
    from minidae.train import evaluate, load_data
    spec = importlib.util.spec_from_file_location("torch_reference", ROOT / "benchmarks" / "torch_reference.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    model = reference.TorchConvDAE()
    model.conv1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=2)
    model.conv6 = torch.nn.ConvTranspose2d(16, 3, 3, stride=2, padding=3, output_padding=1)
    backend.use("numpy", seed_value=config.seed)  # minidae's initial weights for the seed, as train() draws them
    model.load_state_dict({k: torch.from_numpy(v) for k, v in models.build("conv_dae", channels=3).state_dict().items()})
    optimizer = reference.torch_optimizer(config, model.parameters())
    train_images, _, test_images, _, _ = load_data(config, progress=False)
    batches = NoisyBatches(train_images, config.batch_size, config.noise, config.noise_level, seed=config.seed,
                           clip=config.clip)
    evaluator = reference.AsNumpyModel(model, "cpu")
    epochs, seconds = [], []
    for epoch in range(config.epochs):
        start, losses = time.perf_counter(), []
        for noisy, clean in batches.epoch(epoch):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(torch.from_numpy(noisy)), torch.from_numpy(clean))
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        seconds.append(time.perf_counter() - start)
        test = evaluate(evaluator, test_images, config.noise, config.noise_level, config.seed, clip=config.clip)
        epochs.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "test_loss": test["mse_denoised"]})
        print(f"torch epoch {epoch + 1}/{config.epochs}: train loss {epochs[-1]['train_loss']:.5f}, test loss "
              f"{test['mse_denoised']:.5f}, {seconds[-1]:.1f} s", flush=True)
    result = {"model": "conv_dae (3 channels)", "parameters": sum(p.numel() for p in model.parameters()),
              "torch": torch.__version__, "epochs": epochs, "epoch_seconds": seconds, "test": test,
              "train_images": len(train_images), "test_images": len(test_images)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/colour-photos")
    parser.add_argument("--images", default="docs/images")
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--test-patches", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    root = out / "patches"
    if not root.exists():
        print("patches:", json.dumps(write_patches(root, args.side, args.test_patches, args.seed)), flush=True)
    command = [sys.executable, "-m", "minidae", "train", "--data", str(root / "train"), "--test-data",
               str(root / "test"), "--channels", "3", "--epochs", str(args.epochs), "--seed", str(args.seed),
               "--out", str(out / "minidae"), "--force", "--no-progress"]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    from minidae.train import TrainConfig
    config = TrainConfig(data=str(root / "train"), test_data=str(root / "test"), channels=3, epochs=args.epochs,
                         seed=args.seed)
    theirs = torch_twin_run(config, out / "torch")
    ours = json.loads((out / "minidae" / "metrics.json").read_text())
    print(f"\n| test set, {ours['test_images']:,} patches of {', '.join(TEST)} | minidae (NumPy) | PyTorch (CPU) |")
    print("|---|---|---|")
    for key, label, digits in (("mse", "MSE", 5), ("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3)):
        cells = [f"{m['test'][key + '_noisy']:.{digits}f} -> **{m['test'][key + '_denoised']:.{digits}f}**"
                 for m in (ours, theirs)]
        print(f"| {label} noisy -> denoised | {cells[0]} | {cells[1]} |")
    print(f"| median epoch time (s), one core | {np.median(ours['epoch_seconds']):.1f} | "
          f"{np.median(theirs['epoch_seconds']):.1f} |")
    print(f"parameters: minidae {ours['parameters']:,}, PyTorch {theirs['parameters']:,}")
    print("per epoch (train loss / test loss), minidae | PyTorch:")
    for a, b in zip(ours["epochs"], theirs["epochs"]):
        print(f"| {a['epoch']} | {a['train_loss']:.5f} / {a['test_loss']:.5f} | {b['train_loss']:.5f} / "
              f"{b['test_loss']:.5f} |")
    from PIL import Image
    for name, target in (("denoising.png", "denoising_colour.png"), ("layers.png", "layers_colour.png")):
        with Image.open(out / "minidae" / name) as image:  # 256 colours: a quarter of the bytes
            image.convert("RGB").quantize(256).save(os.path.join(args.images, target), optimize=True)


if __name__ == "__main__":
    main()
