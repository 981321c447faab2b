"""tf.data loaders. `stream.training_stream` turns any loader's `take(index)` into reproducible batches."""
from common.data.stream import in_memory, training_stream

__all__ = ["in_memory", "training_stream"]
