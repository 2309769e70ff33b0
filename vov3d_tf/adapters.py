"""The one place where an experiment `Config` becomes plain arguments and typed specs.

Layers, models, the data pipeline, the serving graph and the FLOPs counter take plain keyword
arguments and specs; the commands (train, search, export, predict) read a `Config`. Everything
between the two is here, once:

    model_overrides(cfg.model)          -> create_model(name, num_classes, **overrides)
    model_from_config(cfg.model)        -> the model itself
    train_clip(cfg)                     -> data.specs.TrainClip: the training clips
    eval_views(cfg, multi_view=)        -> data.specs.EvalViews: the test views (evaluation,
                                           predict, the exported graph)
    read_options(cfg)                   -> data.specs.ReadOptions: record keys, corrupt records
    class_names(cfg)                    -> data.labels_file, else the shards' manifest labels
"""
from vov3d_tf.data import specs

__all__ = ["ARCHITECTURE_KEYS", "model_overrides", "model_from_config", "train_clip",
           "eval_views", "read_options", "class_names"]

# `model` keys that change the architecture (what the search varies and the FLOPs depend on).
ARCHITECTURE_KEYS = ("base_width", "num_conv", "blocks")
_TUPLE_KEYS = ("blocks", "head_pool_size")


def model_overrides(model_cfg, *, architecture_only=False):
    """`ModelConfig` -> `create_model` keyword overrides; null keys keep the variant's default.

    `architecture_only`: just base_width / num_conv / blocks (the FLOPs counter's arguments).
    """
    keys = ARCHITECTURE_KEYS if architecture_only else ARCHITECTURE_KEYS + ("head_pool_size",)
    overrides = {} if architecture_only else {"dropout_rate": model_cfg.dropout_rate}
    for key in keys:
        value = getattr(model_cfg, key)
        if value is not None:
            overrides[key] = tuple(value) if key in _TUPLE_KEYS else value
    return overrides


def model_from_config(model_cfg, input_shape=None):
    """`ModelConfig` -> `create_model(...)`; null overrides keep the variant's defaults."""
    from vov3d_tf.model.networks import create_model

    overrides = model_overrides(model_cfg)
    if input_shape is not None:
        overrides["input_shape"] = tuple(input_shape)
    return create_model(model_cfg.name, model_cfg.num_classes, **overrides)


def train_clip(cfg):
    """The training clip of `cfg.data` (the paper's sampling and augmentation)."""
    d = cfg.data
    return specs.TrainClip(num_frames=d.num_frames, crop_size=d.crop_size, sampling=d.sampling,
                           sampling_rate=d.sampling_rate, short_side_range=d.train_short_side,
                           inverse_uniform=d.inverse_uniform_scale, random_flip=d.random_flip)


def eval_views(cfg, *, multi_view=True):
    """The test views of `cfg`: `eval.num_clips x eval.num_crops` (what evaluation measures),
    or with `multi_view=False` one clip, centre crop (segment centres / the first dense
    window)."""
    d = cfg.data
    views = specs.EvalViews(num_frames=d.num_frames, short_side=d.test_short_side,
                            crop_size=d.test_crop_size, sampling=d.sampling,
                            sampling_rate=d.sampling_rate, num_clips=cfg.eval.num_clips,
                            num_crops=cfg.eval.num_crops)
    return views if multi_view else views.single_view()


def read_options(cfg):
    """How `cfg.data`'s shards are read; null record keys keep the shard format's."""
    d = cfg.data
    keys = {k: getattr(d, k) for k in ("image_key", "label_key") if getattr(d, k) is not None}
    return specs.ReadOptions(on_corrupt=d.on_corrupt, **keys)


def class_names(cfg):
    """Label list: `data.labels_file`, else the manifest next to the eval (or train) shards;
    None when there is neither."""
    from vov3d_tf.data.labels import read_labels
    from vov3d_tf.data.shards import manifest_labels

    if cfg.data.labels_file:
        return read_labels(cfg.data.labels_file)
    return manifest_labels([cfg.data.eval_files, cfg.data.train_files])
