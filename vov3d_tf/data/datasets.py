"""An experiment's data: its shard files checked, counted and labelled, and its datasets built.

    ensure_synthetic(cfg)    demo configs: write the synthetic shards if train_files matches nothing
    check_data(cfg)          every shard pattern matches files, train_files are labelled (an
                             error naming the key otherwise)
    count_records(pattern)   records of a shard pattern (manifest counts, else read through)
    manifest_labels(patterns) class names from the manifest beside the shards
    make_datasets(cfg)       (train, eval) tf.data datasets (`make_dataset` with the config's
                             arguments from `vov3d_tf.adapters`)
    shuffle_frames(ds)       frames of every clip in random order (the "learns time" control)
"""
import os
import time

import tensorflow as tf

from vov3d_tf import adapters, fileio
from vov3d_tf.data import pipeline, shards

__all__ = ["ensure_synthetic", "check_data", "count_records", "manifest_labels",
           "make_datasets", "shuffle_frames"]


def _folders(pattern):
    """The folders of the files a pattern matches, sorted."""
    return sorted({fileio.dirname(fileio.abspath(f)) for f in tf.io.gfile.glob(pattern)})


def ensure_synthetic(cfg, source="config"):
    """demo.json: write the synthetic shards into train_files' folder if nothing matches.

    Returns the folder written, or None."""
    if cfg.data.synthetic is None or tf.io.gfile.glob(cfg.data.train_files):
        return None
    from vov3d_tf.data.synthetic import write_synthetic_dataset
    out = os.path.dirname(cfg.data.train_files) or "."
    print(f"[vov3d] {source}: data.train_files {cfg.data.train_files!r} matches nothing; "
          f"writing the synthetic shards into {out}/ ...", flush=True)
    t0 = time.time()
    write_synthetic_dataset(out, **cfg.data.synthetic)
    print(f"[vov3d] synthetic shards written in {time.time() - t0:.1f} s", flush=True)
    return out


def check_data(cfg, source="config", need_train=True):
    """Every shard pattern must match files and the training shards must not be a split whose
    labels are hidden; a clear error naming the key (and file) otherwise."""
    keys = (["train_files"] if need_train else []) + ["eval_files"]
    for key in keys:
        pattern = getattr(cfg.data, key)
        if not tf.io.gfile.glob(pattern):
            folder = os.path.dirname(pattern) or "."
            hint = "" if tf.io.gfile.isdir(folder) else f" (folder {folder!r} does not exist)"
            raise FileNotFoundError(f"{source}: data.{key}: no file matches {pattern!r}{hint}; "
                                    f"build shards with `python -m vov3d_tf.data.build_shards`")
    if need_train:  # a split whose labels are hidden (a test split) cannot be trained on
        try:
            pipeline.check_labelled(cfg.data.train_files)
        except ValueError as e:
            raise ValueError(f"{source}: data.train_files: {e}") from None
    if cfg.data.labels_file and not tf.io.gfile.exists(cfg.data.labels_file):
        raise FileNotFoundError(f"{source}: data.labels_file: {cfg.data.labels_file!r} not found")


def count_records(pattern):
    """Records matched by a shard pattern: manifest counts, else read through the files."""
    if not tf.io.gfile.glob(pattern):
        return 0
    files, compression = pipeline.resolve_files(pattern)
    return sum(expected if expected >= 0 else
               sum(1 for _ in tf.data.TFRecordDataset(path, compression))
               for path, expected in files)


def manifest_labels(patterns):
    """Class names from the first manifest beside the files of `patterns` (in order), or None."""
    for pattern in patterns:
        for folder in _folders(pattern):
            if tf.io.gfile.exists(shards.manifest_path(folder)):
                return shards.load_labels(folder)
    return None


def make_datasets(cfg, *, seed=0, training=True, evaluation_=True, with_filename=False):
    """(train, eval) tf.data datasets from the shard patterns via `vov3d_tf.data.make_dataset`.

    Train elements `(clips (B, T, c, c, 3), labels (B,))`, repeated forever; eval elements
    `(views (B, V, T, c', c', 3), labels (B,))`. `data.shuffle_frames` permutes the frames of
    every clip/video at random (the control of the "learns time" experiment). A dataset not
    asked for is None. `with_filename`: eval elements `(views, labels, filenames)` (see
    `make_dataset`), for prediction files.
    """
    train = ev = None
    if training:
        train = pipeline.make_dataset(cfg.data.train_files,
                                      **adapters.train_dataset_kwargs(cfg, seed=seed))
    if evaluation_:
        ev = pipeline.make_dataset(cfg.data.eval_files, **adapters.eval_dataset_kwargs(cfg),
                                   with_filename=with_filename)
    if cfg.data.shuffle_frames:
        train = shuffle_frames(train, seed, 1) if train is not None else None
        ev = shuffle_frames(ev, seed + 1, 2) if ev is not None else None
    return train, ev


def shuffle_frames(ds, seed, time_axis):
    """Permute the frames of every clip (train, `time_axis` 1) or of every video's views (eval,
    `time_axis` 2) at random."""
    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def shuffle(xy, s):
        x, *rest = xy  # rest: labels (and filenames)
        keys = tf.random.stateless_uniform(tf.stack([tf.shape(x)[0], tf.shape(x)[time_axis]]),
                                           seed=s)
        return (tf.gather(x, tf.argsort(keys, axis=1), axis=time_axis, batch_dims=1), *rest)
    return tf.data.Dataset.zip((ds, seeds)).map(shuffle)
