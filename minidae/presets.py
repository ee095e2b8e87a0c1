"""The recipes of the reference material, as one table: ``minidae train --preset NAME`` takes a row
and explicit flags override it; the trainer builds model, optimiser, loss and noise from the row by
name. Each row says which reference it comes from; where a reference is silent or ambiguous, the
model's docstring (minidae/models.py) and docs/results.md say what minidae chose.
"""

__all__ = ["PRESETS", "DEFAULT_PRESET"]

_ADAM = dict(optimizer="adam", momentum=0.0)
_SGD = dict(optimizer="sgd", weight_decay=0.0)

PRESETS = {
    "conv_dae": dict(model="conv_dae", **_ADAM, lr=1e-3, weight_decay=1e-5, batch_size=64, epochs=10,
                     noise="gaussian", noise_level=0.5, clip=True, loss="mse",
                     source="the specification (docs/spec.md)"),
    "fc_dae": dict(model="fc_dae", **_ADAM, lr=1e-2, weight_decay=0.0, batch_size=128, epochs=10,
                   noise="gaussian", noise_level=1.0, clip=False, loss="mse",
                   source="references/fc_dae_article.txt"),
    "dense_ae": dict(model="dense_ae", **_ADAM, lr=1e-3, weight_decay=0.0, batch_size=32, epochs=200,
                     noise="gaussian", noise_level=0.5, clip=True, loss="mse",
                     source="references/dense_ae_article.txt (loss, noise and batch chosen by minidae)"),
    "fc_ae": dict(model="fc_ae", **_SGD, lr=1.0, momentum=0.0, batch_size=10, epochs=10,
                  noise="none", noise_level=0.0, clip=True, loss="mse",
                  source="references/fc_ae_and_conv_ae_pool_report.txt, part 1"),
    "conv_ae_pool": dict(model="conv_ae_pool", **_SGD, lr=1.0, momentum=0.0, batch_size=10, epochs=10,
                         noise="none", noise_level=0.0, clip=True, loss="mse",
                         source="references/fc_ae_and_conv_ae_pool_report.txt, part 2"),
    "conv_denoiser": dict(model="conv_denoiser", **_ADAM, lr=1e-3, weight_decay=0.0, batch_size=20, epochs=20,
                          noise="gaussian", noise_level=0.5, clip=True, loss="mse",
                          source="references/conv_denoiser_notes.md"),
}
DEFAULT_PRESET = "conv_dae"
