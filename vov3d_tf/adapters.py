"""The one place where an experiment `Config` becomes plain arguments.

Layers, models, the data pipeline, the serving graph and the FLOPs counter take plain keyword
arguments; the commands (train, search, export, predict) read a `Config`. Everything between
the two is here, once:

    model_overrides(cfg.model)          -> create_model(name, num_classes, **overrides)
    model_from_config(cfg.model)        -> the model itself
    eval_crop_size(cfg.data)            -> the test crop (null = the test short side)
    eval_view_kwargs(cfg, multi_view=)  -> preprocess.eval_views / ServingSpec keyword arguments
    train_dataset_kwargs(cfg, seed=)    -> data.make_dataset(train_files, **kwargs)
    eval_dataset_kwargs(cfg)            -> data.make_dataset(eval_files, **kwargs)
    class_names(cfg)                    -> data.labels_file, else the shards' manifest labels
    lr_schedule_args(train_cfg, spe)    -> (schedule class name, its keyword arguments)

Nothing here imports TensorFlow at module level.
"""

__all__ = ["ARCHITECTURE_KEYS", "model_overrides", "model_from_config", "eval_crop_size",
           "eval_view_kwargs", "train_dataset_kwargs", "eval_dataset_kwargs", "class_names",
           "lr_schedule_args"]

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
    from vov3d_tf.models import create_model

    overrides = model_overrides(model_cfg)
    if input_shape is not None:
        overrides["input_shape"] = tuple(input_shape)
    return create_model(model_cfg.name, model_cfg.num_classes, **overrides)


def eval_crop_size(data_cfg):
    """The test crop: `data.test_crop_size`, or the whole test short side when it is null."""
    return data_cfg.test_crop_size or data_cfg.test_short_side


def eval_view_kwargs(cfg, *, multi_view=True):
    """Keyword arguments of `preprocess.eval_views[_from_frames]` (and of `ServingSpec`).

    Multi-view = `eval.num_clips x eval.num_crops`, as evaluation measures; single view = one
    clip, centre crop (segment centres / the first dense window).
    """
    d = cfg.data
    return dict(num_frames=d.num_frames, crop_size=eval_crop_size(d), sampling=d.sampling,
                sampling_rate=d.sampling_rate, short_side=d.test_short_side,
                num_clips=cfg.eval.num_clips if multi_view else 1,
                num_crops=cfg.eval.num_crops if multi_view else 1)


def _common_dataset_kwargs(d):
    return dict(num_frames=d.num_frames, sampling=d.sampling, sampling_rate=d.sampling_rate,
                on_corrupt=d.on_corrupt, image_key=d.image_key, label_key=d.label_key)


def train_dataset_kwargs(cfg, *, seed=0):
    """`make_dataset(cfg.data.train_files, **kwargs)`: the paper's training clips, repeated."""
    d = cfg.data
    return dict(training=True, batch_size=cfg.train.batch_size, crop_size=d.crop_size,
                scale_range=tuple(d.train_short_side), inverse_uniform=d.inverse_uniform_scale,
                random_flip=d.random_flip, seed=seed, repeat=True, **_common_dataset_kwargs(d))


def eval_dataset_kwargs(cfg):
    """`make_dataset(cfg.data.eval_files, **kwargs)`: the multi-view test."""
    d = cfg.data
    return dict(training=False, batch_size=cfg.eval.batch_size,
                test_short_side=d.test_short_side, test_crop_size=eval_crop_size(d),
                num_clips=cfg.eval.num_clips, num_crops=cfg.eval.num_crops,
                **_common_dataset_kwargs(d))


def class_names(cfg):
    """Label list: `data.labels_file`, else the manifest next to the eval (or train) shards;
    None when there is neither."""
    from vov3d_tf.data.datasets import manifest_labels
    from vov3d_tf.data.labels import read_labels

    if cfg.data.labels_file:
        return read_labels(cfg.data.labels_file)
    return manifest_labels([cfg.data.eval_files, cfg.data.train_files])


def lr_schedule_args(train_cfg, steps_per_epoch):
    """`train` section -> ("WarmupCosineDecay" or "WarmupStepsDecay", keyword arguments).

    Peak LR = base_lr x batch_size / lr_reference_batch (linear scaling); the warm-up is
    `warmup_epochs` rounded to whole steps.
    """
    t = train_cfg
    peak = t.base_lr * t.batch_size / t.lr_reference_batch
    warmup = dict(warmup_steps=int(round(t.warmup_epochs * steps_per_epoch)),
                  warmup_start_lr=t.warmup_start_lr)
    if t.lr_policy == "cosine":
        return "WarmupCosineDecay", dict(peak_lr=peak, total_steps=t.epochs * steps_per_epoch,
                                         **warmup)
    return "WarmupStepsDecay", dict(peak_lr=peak, steps_per_epoch=steps_per_epoch,
                                    lr_steps=tuple(t.lr_steps), lr_relative=tuple(t.lr_relative),
                                    **warmup)
