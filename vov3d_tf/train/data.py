"""A run's data: its shard files checked, counted and labelled, and its datasets built.

    ensure_synthetic(cfg)    demo configs: write the synthetic shards if train_files matches nothing
    check_data(cfg)          every shard pattern matches files, train_files are labelled (an
                             error naming the key otherwise)
    make_datasets(cfg)       (train, eval) tf.data datasets, the config's specs from
                             `vov3d_tf.adapters`; `data.shuffle_frames` applied
    RunData                  a run's data: the config's shards, or in-memory datasets
"""
import os
import time



from vov3d_tf import adapters, fileio
from vov3d_tf.data import pipeline

__all__ = ["ensure_synthetic", "check_data", "make_datasets", "RunData"]


def ensure_synthetic(cfg, source="config"):
    """demo.json: write the synthetic shards into train_files' folder if nothing matches.

    Returns the folder written, or None."""
    if cfg.data.synthetic is None or fileio.glob(cfg.data.train_files):
        return None
    from vov3d_tf.data.build.synthetic import write_synthetic_dataset
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
        if not fileio.glob(pattern):
            folder = os.path.dirname(pattern) or "."
            hint = "" if fileio.isdir(folder) else f" (folder {folder!r} does not exist)"
            raise FileNotFoundError(f"{source}: data.{key}: no file matches {pattern!r}{hint}; "
                                    f"build shards with `vov3d-build-shards`")
    if need_train:  # a split whose labels are hidden (a test split) cannot be trained on
        try:
            pipeline.check_labelled(cfg.data.train_files)
        except ValueError as e:
            raise ValueError(f"{source}: data.train_files: {e}") from None
    if cfg.data.labels_file and not fileio.exists(cfg.data.labels_file):
        raise FileNotFoundError(f"{source}: data.labels_file: {cfg.data.labels_file!r} not found")


def make_datasets(cfg, *, seed=0, training=True, evaluation_=True, with_filename=False):
    """(train, eval) tf.data datasets of the config's shards: `pipeline.train_dataset` of
    `adapters.train_clip(cfg)` and `pipeline.eval_dataset` of `adapters.eval_views(cfg)`.

    Train elements `(clips (B, T, c, c, 3), labels (B,))`, repeated forever, seeded by `seed`;
    eval elements `(views (B, V, T, c', c', 3), labels (B,))`. `data.shuffle_frames` permutes
    the frames of every clip/video at random (the control of the "learns time" experiment). A
    dataset not asked for is None. `with_filename`: eval elements `(views, labels,
    filenames)`, for prediction files.
    """
    read = adapters.read_options(cfg)
    train = ev = None
    if training:
        train = pipeline.train_dataset(cfg.data.train_files, adapters.train_clip(cfg),
                                       batch_size=cfg.train.batch_size, read=read, seed=seed)
    if evaluation_:
        ev = pipeline.eval_dataset(cfg.data.eval_files, adapters.eval_views(cfg),
                                   batch_size=cfg.eval.batch_size, read=read,
                                   with_filename=with_filename)
    if cfg.data.shuffle_frames:
        train = pipeline.shuffle_frames(train, seed, 1) if train is not None else None
        ev = pipeline.shuffle_frames(ev, seed + 1, 2) if ev is not None else None
    return train, ev


class RunData:
    """The data of a run: the config's shards, or in-memory `(train, eval)` datasets (tests,
    the search). The one place the two differ, so `_run` has no branch on it."""

    def __init__(self, cfg, source, datasets=None):
        self.cfg, self.source, self.given = cfg, source, datasets

    def check(self, chief):
        """Shards: demo data written if asked for (chief), every pattern matches files."""
        if self.given is None:
            if chief:
                ensure_synthetic(self.cfg, self.source)
            check_data(self.cfg, self.source)

    def class_names(self):
        """The label list (None for in-memory data), checked against model.num_classes."""
        names = adapters.class_names(self.cfg) if self.given is None else None
        if names is not None and len(names) != self.cfg.model.num_classes:
            raise ValueError(f"{self.source}: model.num_classes is {self.cfg.model.num_classes} "
                             f"but the dataset has {len(names)} labels")
        return names

    def steps_per_epoch(self):
        tc = self.cfg.train
        if tc.steps_per_epoch:
            return tc.steps_per_epoch
        if self.given is None:
            return max(1, pipeline.count_records(self.cfg.data.train_files) // tc.batch_size)
        raise ValueError(f"{self.source}: train.steps_per_epoch must be set with in-memory "
                         f"datasets")

    def datasets(self, seed):
        """(train, eval); shards: the training stream starts from `seed`."""
        return make_datasets(self.cfg, seed=seed) if self.given is None else tuple(self.given)

    def precise_bn_batches(self, seed, train_ds):
        """Training batches for precise BN (None when off): a fresh stream for shards."""
        if not self.cfg.train.precise_bn_batches:
            return None
        if self.given is None:
            return make_datasets(self.cfg, seed=seed, evaluation_=False)[0]
        return train_ds
