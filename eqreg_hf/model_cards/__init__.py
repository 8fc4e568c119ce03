"""Jinja templates of the model cards written by :func:`eqreg_hf.hub.make_model_card`.

One template per task (``derain.md``, ``classification.md``); the tables are rendered in
``eqreg_hf.hub.card`` and passed in, so the templates hold only the prose.
"""
