"""vov3d_tf.adapters: a Config becomes exactly the plain arguments the builders take."""
import inspect

from vov3d_tf import adapters
from vov3d_tf.config import config_from_dict


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


def test_view_kwargs_and_test_crop_fallback():
    cfg = config_from_dict({"data": {"num_frames": 8, "test_short_side": 64},
                            "eval": {"num_clips": 2, "num_crops": 3}})
    assert adapters.eval_crop_size(cfg.data) == 64  # null test_crop_size = the short side
    multi = adapters.eval_view_kwargs(cfg)
    assert multi == dict(num_frames=8, crop_size=64, sampling="segment", sampling_rate=1,
                         short_side=64, num_clips=2, num_crops=3)
    single = adapters.eval_view_kwargs(cfg, multi_view=False)
    assert (single["num_clips"], single["num_crops"]) == (1, 1)
    cropped = config_from_dict({"data": {"test_short_side": 64, "test_crop_size": 48}})
    assert adapters.eval_dataset_kwargs(cropped)["test_crop_size"] == 48


def test_dataset_kwargs_are_make_dataset_arguments():
    from vov3d_tf.data import make_dataset
    from vov3d_tf.data.preprocess import eval_views
    cfg = config_from_dict({})
    params = inspect.signature(make_dataset).parameters
    for kwargs in (adapters.train_dataset_kwargs(cfg, seed=3), adapters.eval_dataset_kwargs(cfg)):
        assert set(kwargs) <= set(params)
    assert adapters.train_dataset_kwargs(cfg, seed=3)["seed"] == 3
    assert set(adapters.eval_view_kwargs(cfg)) <= set(inspect.signature(eval_views).parameters)
