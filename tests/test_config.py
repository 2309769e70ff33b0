"""Strict config loading: every bad key/type/range is an error naming the file and the key."""
import glob
import json
import os

import pytest

from vov3d_tf.config import (Config, apply_overrides, config_from_dict, config_to_dict,
                             load_config, parse_override, save_config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, d, name="exp.json"):
    path = tmp_path / name
    path.write_text(json.dumps(d))
    return str(path)


def test_defaults_are_the_paper_ssv2_recipe():
    cfg = config_from_dict({})
    assert cfg.model.name == "vov3d_m" and cfg.model.dropout_rate == 0.5
    assert (cfg.train.base_lr, cfg.train.momentum, cfg.train.weight_decay) == (0.1, 0.9, 5e-5)
    assert cfg.train.nesterov is True and cfg.train.warmup_epochs == 1.0
    assert (cfg.eval.num_clips, cfg.eval.num_crops) == (2, 3)
    assert cfg.search.objective == "val_top1"


@pytest.mark.parametrize("d, key, fragment", [
    ({"model": {"nmae": "vov3d_m"}}, "model", "unknown key(s) 'nmae'"),
    ({"trian": {}}, "unknown section(s) 'trian'", "allowed: model, data, train, eval, search"),
    ({"train": {"epochs": "10"}}, "train.epochs", "expected an integer"),
    ({"train": {"epochs": 2.5}}, "train.epochs", "expected an integer"),
    ({"train": {"epochs": 0}}, "train.epochs", "out of range, expected > 0"),
    ({"train": {"batch_size": True}}, "train.batch_size", "expected an integer"),
    ({"train": {"momentum": 1.0}}, "train.momentum", "expected >= 0.0 and < 1.0"),
    ({"train": {"mixed_precision": "float16"}}, "train.mixed_precision", "'mixed_float16'"),
    ({"train": {"nesterov": "yes"}}, "train.nesterov", "expected true/false"),
    ({"model": {"name": "vov3d_xl"}}, "model.name", "allowed: vov3d_m, vov3d_l, x3d_m, x3d_l"),
    ({"model": {"blocks": [1, 2, 3]}}, "model.blocks", "expected 4 values"),
    ({"model": {"blocks": [1, 2, 0, 1]}}, "model.blocks[2]", "out of range"),
    ({"model": {"name": "x3d_m", "num_conv": 3}}, "model.num_conv", "VoV3D only"),
    ({"model": {"base_width": 9}}, "model.base_width", "even"),
    ({"data": {"sampling": "random"}}, "data.sampling", "'segment', 'dense'"),
    ({"data": {"train_short_side": [320, 256]}}, "data.train_short_side", "min <= max"),
    ({"data": {"crop_size": 300}}, "data.train_short_side", "smaller than data.crop_size"),
    ({"data": {"train_files": ""}}, "data.train_files", "non-empty string"),
    ({"eval": {"num_crops": 4}}, "eval.num_crops", "<= 3"),
    ({"eval": {"num_crops": 2}}, "eval.num_crops", "expected one of 1, 3, got 2"),
    ({"search": {"tuner": "grid"}}, "search.tuner", "'random'"),
    ({"search": {"space": {"blocks": [[1, 1, 1]]}}}, "search.space.blocks[0]", "4 values"),
    ({"search": {"space": {"colour": [1]}}}, "search.space", "unknown key(s) 'colour'"),
    ({"data": {"synthetic": {"num_videos": 10}}}, "data.synthetic", "unknown key(s) 'num_videos'"),
    ({"data": {"synthetic": [1]}}, "data.synthetic", "expected an object"),
    ([1, 2], "", "JSON object of sections"),
])
def test_bad_values_name_file_and_key(tmp_path, d, key, fragment):
    path = _write(tmp_path, d)
    with pytest.raises(ValueError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(path), msg
    assert key in msg and fragment in msg, msg


def test_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"train": {"epochs": 3,}}')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_config(str(path))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_config(str(tmp_path / "nope.json"))


def test_overrides_parse_json_values(tmp_path):
    path = _write(tmp_path, {"train": {"epochs": 100}})
    cfg = load_config(path, ["train.epochs=3", "model.blocks=[1,1,1,1]", "model.name=vov3d_l",
                             "train.mixed_precision=null", "train.base_lr=0.05",
                             "search.space.base_width=[8,16]", "data.synthetic=null"])
    assert cfg.train.epochs == 3 and cfg.model.blocks == (1, 1, 1, 1)
    assert cfg.model.name == "vov3d_l" and cfg.train.base_lr == 0.05
    assert cfg.search.space.base_width == (8, 16)
    assert cfg.data.synthetic is None
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")
    with pytest.raises(ValueError, match="with --set train.epochs=-1.*train.epochs"):
        load_config(path, ["train.epochs=-1"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(path, ["epochs=3"])
    with pytest.raises(ValueError, match="train.epochs is not a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


def test_round_trip(tmp_path):
    cfg = config_from_dict({"model": {"blocks": [1, 1, 1, 1], "base_width": 8},
                            "search": {"space": {"blocks": [[1, 1, 1, 1], [1, 2, 2, 1]]}}})
    path = tmp_path / "resolved.json"
    save_config(cfg, path)
    again = load_config(str(path))
    assert again == cfg
    assert config_to_dict(again)["model"]["blocks"] == [1, 1, 1, 1]
    assert isinstance(cfg, Config) and hash(cfg.model) == hash(again.model)


def test_shipped_configs_load():
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*.json")))
    for path in paths:
        cfg = load_config(path)
        assert cfg.model.num_classes > 0, path
