"""Video data: the TFRecord shard format, shard building, synthetic data and the tf.data pipeline.

    make_dataset(file_pattern, training=...)   tf.data pipeline (pipeline.py)
    load_labels(shard_dir_or_labels_file)      class names, index order (labels.py reads files)
    datasets                                   an experiment config's shards -> make_datasets(cfg)
    write_synthetic_dataset(output_dir, ...)   the temporal-order demo dataset (synthetic.py)
    preprocess                                 pure TF sampling/resize/crop/normalize
    format                                     record keys, make/parse SequenceExample
"""
from vov3d_tf.data import format, preprocess  # noqa: F401  (public submodules)
from vov3d_tf.data.pipeline import (corrupt_record_counts, load_labels, make_dataset,
                                    reset_corrupt_record_counts, resolve_files)
from vov3d_tf.data.synthetic import write_synthetic_dataset

__all__ = ["make_dataset", "load_labels", "write_synthetic_dataset", "corrupt_record_counts",
           "reset_corrupt_record_counts", "resolve_files", "format", "preprocess"]
