"""The web demo and its Hugging Face Space (optional extra: ``pip install -e ".[app]"``).

    restore.py   what the demo computes, without a UI: load, degrade, restore, rotation consistency,
                 layer errors
    ui.py        the Gradio app (``eqreg-hf app [MODEL_FOLDER_OR_HUB_ID]``)
    space.py     a folder that runs as a Hugging Face Space (``eqreg-hf space``)

This layer sits above ``tasks`` and below ``cli``: it imports ``core``, ``data``, ``hub`` (and ``tasks``);
gradio is imported only when an app is built.
"""
