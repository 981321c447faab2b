import common  # noqa: F401  (its import settings must precede TensorFlow's import in every chapter)
