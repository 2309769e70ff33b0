"""vov3d_tf.search.space: the search space and hp -> create_model / config mapping."""
import keras_tuner as kt
import pytest

from vov3d_tf.search import space as tuner
from vov3d_tf.config import config_from_dict


def make_cfg(model="vov3d_m", space=None, **sections):
    d = {"model": {"name": model, "num_classes": 4},
         "data": {"num_frames": 8, "crop_size": 32, "train_short_side": [36, 40],
                  "test_short_side": 40},
         "train": {"epochs": 10, "warmup_epochs": 2.0, "output_dir": "/tmp/unused"},
         "search": {"space": space or {"base_width": [8, 16], "num_conv": [1, 2, 3],
                                      "blocks": [[1, 1, 1, 1], [1, 2, 3, 2]]}}}
    for k, v in sections.items():
        d[k].update(v)
    return config_from_dict(d)


def test_blocks_encoding_round_trip_and_errors():
    assert tuner.encode_blocks((1, 2, 3, 2)) == "1-2-3-2"
    assert tuner.decode_blocks("1-2-5-3") == (1, 2, 5, 3)
    assert tuner.decode_blocks(tuner.encode_blocks([2, 2, 2, 2])) == (2, 2, 2, 2)
    with pytest.raises(ValueError, match="4 stages"):
        tuner.decode_blocks("1-2-3")
    with pytest.raises(ValueError, match="1-2-3-2"):
        tuner.decode_blocks("a-b-c-d")


def test_declare_space_vov3d_and_x3d():
    hp = tuner.declare_space(kt.HyperParameters(), make_cfg())
    space = {p.name: list(p.values) for p in hp.space}
    assert space == {"base_width": [8, 16], "num_conv": [1, 2, 3],
                     "blocks": ["1-1-1-1", "1-2-3-2"]}
    cfg = make_cfg(space={"base_width": [12, 24], "blocks": [[3, 5, 11, 7]],
                          "num_frames": [4, 8], "crop_size": [32, 36]})
    hp = tuner.declare_space(kt.HyperParameters(), cfg)
    assert {p.name: list(p.values) for p in hp.space} == {
        "base_width": [12, 24], "num_conv": [2, 3, 4, 5], "blocks": ["3-5-11-7"],
        "num_frames": [4, 8], "crop_size": [32, 36]}
    x3d = make_cfg(model="x3d_m", space={"base_width": [12, 13], "blocks": [[1, 1, 1, 1]]})
    hp = tuner.declare_space(kt.HyperParameters(), x3d)
    assert [p.name for p in hp.space] == ["base_width", "blocks"]  # no num_conv for X3D


def test_overrides_and_trial_config():
    values = {"base_width": 16, "num_conv": 3, "blocks": "1-2-3-2", "num_frames": 4,
              "crop_size": 36, "tuner/epochs": 3, "tuner/round": 0}
    assert tuner.model_overrides(values) == {"base_width": 16, "num_conv": 3,
                                             "blocks": (1, 2, 3, 2)}
    assert tuner.data_overrides(values) == {"num_frames": 4, "crop_size": 36}
    assert tuner.arch_values(values) == {"base_width": 16, "num_conv": 3, "blocks": "1-2-3-2",
                                         "num_frames": 4, "crop_size": 36}
    base = make_cfg()
    t = tuner.trial_config(base, values, epochs=1, output_dir="/tmp/x/trial_0")
    assert (t.model.base_width, t.model.num_conv, t.model.blocks) == (16, 3, (1, 2, 3, 2))
    assert (t.data.num_frames, t.data.crop_size) == (4, 36)
    assert (t.train.epochs, t.train.warmup_epochs, t.train.output_dir) == (1, 1.0, "/tmp/x/trial_0")
    # Everything else is the base config, untouched.
    assert t.train.base_lr == base.train.base_lr and t.data.train_short_side == (36, 40)
    assert t.search == base.search and t.model.name == "vov3d_m"
    t = tuner.trial_config(base, values, epochs=5)
    assert (t.train.epochs, t.train.warmup_epochs) == (5, 2.0)  # warm-up kept when it fits
    assert tuner.clip_shape(t) == (4, 36, 36, 3)
    assert tuner.cost_kwargs(t) == {"input_shape": (4, 36, 36, 3), "num_classes": 4,
                                    "base_width": 16, "num_conv": 3, "blocks": (1, 2, 3, 2)}
    with pytest.raises(ValueError, match="even base width"):
        tuner.trial_config(base, {"base_width": 15})


def test_check_space_errors_name_the_key():
    tuner.check_space(make_cfg())  # valid
    with pytest.raises(ValueError, match=r"search\.space\.base_width: VoV3D needs even .*\[15\]"):
        tuner.check_space(make_cfg(space={"base_width": [8, 15]}))
    with pytest.raises(ValueError, match=r"search\.space\.num_conv: needs at least one value"):
        tuner.check_space(make_cfg(space={"num_conv": []}))
    with pytest.raises(ValueError, match=r"search\.space\.blocks: has duplicate"):
        tuner.check_space(make_cfg(space={"blocks": [[1, 1, 1, 1], [1, 1, 1, 1]]}))
    with pytest.raises(ValueError, match=r"search\.space\.blocks\[1\]: expected 4"):
        tuner.check_space(make_cfg(space={"blocks": [[1, 1, 1, 1], [1, 1, 1]]}))
    with pytest.raises(ValueError, match=r"search\.space\.crop_size: .*'crop_size': 48.*"
                                         r"train_short_side"):
        tuner.check_space(make_cfg(space={"crop_size": [32, 48]}))
    tuner.check_space(make_cfg(model="x3d_m", space={"base_width": [12, 13]}))  # odd is fine
