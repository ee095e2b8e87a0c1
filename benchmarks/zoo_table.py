"""docs/results.md's zoo table from the zoo.json that benchmarks/zoo_runs.py writes:

    python benchmarks/zoo_table.py DIR/zoo.json

Prints two Markdown tables: minidae beside PyTorch for every preset (test-set metrics, seconds per
epoch), and each reference's own reported figure beside ours in the reference's unit.
"""
import json
import statistics
import sys

# What each reference reports, and how to compute the same figure from a run's per-epoch train losses
# (the mean batch loss of each epoch), as the reference's code computes it.
REFERENCE = {
    "conv_dae": ("none reported", None),
    "fc_dae": ("mean training loss, epoch 1 / 2: 0.0509 / 0.0407",
               lambda e: f"{e[0]['train_loss']:.4f} / {e[1]['train_loss']:.4f}"),
    "dense_ae": ("final loss after 200 epochs: 0.0479 (loss not named)",
                 lambda e: f"{e[-1]['train_loss']:.4f} after {len(e)} epochs (MSE)"),
    "fc_ae": ("\"average loss for 10 epochs\": 0.4988 (batch loss x batch size 10)",
              lambda e: f"{10 * statistics.mean(x['train_loss'] for x in e):.4f}"),
    "conv_ae_pool": ("\"average loss for 10 epochs\": 0.4761 (batch loss x batch size 10)",
                     lambda e: f"{10 * statistics.mean(x['train_loss'] for x in e):.4f}"),
    "conv_denoiser": ("\"training loss\" (20 x mean loss), epochs 1 / 10 / 20: 0.8993 / 0.4417 / 0.3999",
                      lambda e: " / ".join(f"{20 * e[i]['train_loss']:.4f}" for i in (0, 9, 19) if i < len(e))),
}


def main(path):
    with open(path) as f:
        runs = json.load(f)
    presets = [name[len("minidae-"):] for name in runs if name.startswith("minidae-")]
    print("| model | parameters | epochs | framework | test MSE noisy -> denoised | PSNR (dB) | SSIM | s / epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in presets:
        for framework in ("minidae", "torch"):
            run = runs.get(f"{framework}-{preset}", {})
            label = {"numpy": "minidae (NumPy)", "cupy": "minidae (CuPy)", "torch-cuda": "PyTorch (CUDA)",
                     "torch-cpu": "PyTorch (CPU)"}.get(run.get("backend"), framework)
            if "test" not in run:
                print(f"| {preset} | | | {label} | {run.get('error', 'not run')} | | | |")
                continue
            t = run["test"]
            print(f"| {preset} | {run['parameters']:,} | {len(run['epochs'])} | {label} | "
                  f"{t['mse_noisy']:.5f} -> **{t['mse_denoised']:.5f}** | {t['psnr_noisy']:.2f} -> "
                  f"{t['psnr_denoised']:.2f} | {t['ssim_noisy']:.3f} -> {t['ssim_denoised']:.3f} | "
                  f"{statistics.median(run['epoch_seconds']):.2f} |")
    print()
    print("| model | minidae / PyTorch test MSE | the reference reports | minidae, same unit | PyTorch twin, same unit |")
    print("|---|---|---|---|---|")
    for preset in presets:
        ours, theirs = runs.get(f"minidae-{preset}", {}), runs.get(f"torch-{preset}", {})
        ratio = (f"{ours['test']['mse_denoised'] / theirs['test']['mse_denoised']:.4f}"
                 if "test" in ours and "test" in theirs else "n/a")
        text, figure = REFERENCE[preset]
        mine = figure(ours["epochs"]) if figure and "epochs" in ours else "-"
        twin = figure(theirs["epochs"]) if figure and "epochs" in theirs else "-"
        print(f"| {preset} | {ratio} | {text} | {mine} | {twin} |")


if __name__ == "__main__":
    main(sys.argv[1])
