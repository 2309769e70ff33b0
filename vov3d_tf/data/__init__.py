"""Video data: the TFRecord shard format, shard building, synthetic data and the tf.data pipeline."""
