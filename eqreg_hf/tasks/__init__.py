"""The tasks EQ-Reg is shipped with, built on the layers below (core, train, callbacks, hub, data).

- :mod:`eqreg_hf.tasks.derain`: deraining networks, the ``train-derain`` recipe and the demo.
- :mod:`eqreg_hf.tasks.classify`: timm / transformers classifiers and the ``train-classifier`` recipe.
- :mod:`eqreg_hf.tasks.metrics`: restoration metrics (PSNR / SSIM) and the ``evaluate`` metric.
- :mod:`eqreg_hf.tasks.validation`: the checks the run-argument dataclasses share.
"""
