"""vov3d_tf.adapters: a Config becomes exactly the plain arguments and specs the builders take."""
from vov3d_tf import adapters
from vov3d_tf.config import config_from_dict
from vov3d_tf.data import format as fmt
from vov3d_tf.data.specs import EvalViews, ReadOptions, TrainClip


def test_model_overrides_keep_variant_defaults_for_null_keys():
    cfg = config_from_dict({"model": {"name": "vov3d_m", "num_classes": 7, "base_width": 16,
                                      "blocks": [1, 1, 2, 1], "head_pool_size": [4, 2, 2]}})
    assert adapters.model_overrides(cfg.model) == {
        "dropout_rate": 0.5, "base_width": 16, "blocks": (1, 1, 2, 1), "head_pool_size": (4, 2, 2)}
    assert adapters.model_overrides(cfg.model, architecture_only=True) == {
        "base_width": 16, "blocks": (1, 1, 2, 1)}
    model = adapters.model_from_config(cfg.model, input_shape=(4, 32, 32, 3))
    assert (model.num_classes, model.base_width, model.num_conv, model.blocks) == (
        7, 16, 5, (1, 1, 2, 1))
    assert model.frames_shape == (4, 32, 32, 3)


def test_eval_views_and_test_crop_fallback():
    cfg = config_from_dict({"data": {"num_frames": 8, "test_short_side": 64},
                            "eval": {"num_clips": 2, "num_crops": 3}})
    multi = adapters.eval_views(cfg)
    assert multi == EvalViews(num_frames=8, short_side=64, crop_size=None, sampling="segment",
                              sampling_rate=1, num_clips=2, num_crops=3)
    assert multi.crop == 64  # null test_crop_size = the short side
    single = adapters.eval_views(cfg, multi_view=False)
    assert (single.num_clips, single.num_crops, single.crop) == (1, 1, 64)
    cropped = config_from_dict({"data": {"test_short_side": 64, "test_crop_size": 48}})
    assert adapters.eval_views(cropped).crop == 48


def test_train_clip_and_read_options():
    cfg = config_from_dict({"data": {"num_frames": 8, "crop_size": 40, "train_short_side": [40, 48],
                                     "inverse_uniform_scale": False, "random_flip": True,
                                     "sampling": "dense", "sampling_rate": 5,
                                     "on_corrupt": "fail", "image_key": "frames"}})
    assert adapters.train_clip(cfg) == TrainClip(
        num_frames=8, crop_size=40, sampling="dense", sampling_rate=5, short_side_range=(40, 48),
        inverse_uniform=False, random_flip=True)
    read = adapters.read_options(cfg)
    assert read == ReadOptions(image_key="frames", label_key=fmt.LABEL_INDEX_KEY,
                               on_corrupt="fail")
    assert adapters.read_options(config_from_dict({})).image_key == fmt.IMAGE_KEY
