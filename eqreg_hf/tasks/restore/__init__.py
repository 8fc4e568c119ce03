"""Restoration (denoising, inpainting, super-resolution) with EQ-Reg, where 90° turns and mirror images are
the right prior. Modules (imported on demand; this package imports none of them):

- ``restore.networks``: DnCNN-style restorer and its strictly C4/D4-equivariant twin (``build_restorer``).
- ``restore.swin2sr``: transformers' Swin2SR built from a config, trained through ``EqRegTrainer``.
- ``restore.recipe``: ``RestoreTrainingArguments`` / ``train_restorer`` (``eqreg-hf train-restore``).
- ``restore.evaluate``: PSNR / SSIM on held-out photos and the per-layer equivariance error.
- ``restore.baselines``: deepinv's equivariant-imaging loss, the output-level peer of EQ-Reg.
- ``restore.selfsup``: self-supervised inpainting: measurements (deepinv ``Inpainting`` + ``PoissonNoise``)
  and deepinv's MC / EI / REI losses as a task loss; ``restore.measurements``: measurement-only training sets;
  ``restore.selfsup_hooks``: the recipe's hooks for ``supervision="self"``.

The data (clean images, deepinv forward models, transforms) are in :mod:`eqreg_hf.data.restore`.
"""
