"""Image classification with EQ-Reg.

- :mod:`~eqreg_hf.tasks.classify.networks`: timm and transformers classifiers by name (``create_classifier``).
- :mod:`~eqreg_hf.tasks.classify.recipe`: ``ClassifierArgs``, ``train_classifier`` and the plain /
  augmentation / EQ-Reg comparison.
"""
