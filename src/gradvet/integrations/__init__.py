"""Training-framework integrations, each imported on its own so its framework stays optional.

- :mod:`gradvet.integrations.lightning`: ``GradvetCallback`` for Lightning's ``Trainer``
  (``pip install gradvet[lightning]``).
- :mod:`gradvet.integrations.transformers`: ``GradvetCallback`` for Hugging Face's
  ``Trainer`` (``pip install gradvet[hf]``).

Importing this package imports no framework.
"""

__all__: list[str] = []
