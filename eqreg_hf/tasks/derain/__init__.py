"""Deraining with EQ-Reg.

- :mod:`~eqreg_hf.tasks.derain.networks`: FastDerainer, RCDNet, StrictC4Derainer (``eqreg_layers(t)``: their
  own taps).
- :mod:`~eqreg_hf.tasks.derain.recipe`: ``DerainTrainingArguments``, ``train_derainer``, ``save_derainer``.
- :mod:`~eqreg_hf.tasks.derain.evaluate`: PSNR / SSIM and the layer-wise equivariance error on held-out
  images.
- :mod:`~eqreg_hf.tasks.derain.demo`: ``eqreg-hf demo`` (plain vs rotation augmentation vs EQ-Reg).
"""
