"""Shards written by other tools (DMVR / TF Model Garden style): no manifest, no .tfrecord
extension, other feature keys (data.image_key / data.label_key); and the stored frame rate that
dense (Kinetics) sampling checks."""
import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import vov3d_tf.data as vdata
from vov3d_tf import adapters
from vov3d_tf.config import config_from_dict
from vov3d_tf.data import pipeline, shards
from vov3d_tf.data.specs import EvalViews, ReadOptions
from vov3d_tf.data import format as fmt


def _jpeg(value, size=(40, 32)):
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _foreign_record(label, num_frames, image_key="image/encoded", label_key="clip/label/index"):
    """A SequenceExample as DMVR / Model Garden writers make them: frames and one label, no
    label text or file name."""
    ex = tf.train.SequenceExample()
    ex.context.feature[label_key].int64_list.value.append(label)
    frames = ex.feature_lists.feature_list[image_key]
    for k in range(num_frames):
        frames.feature.add().bytes_list.value.append(_jpeg(20 * label + k))
    return ex.SerializeToString()


def _write(path, records):
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r)


def test_foreign_keys_without_manifest_or_extension(tmp_path):
    for k in range(2):  # DMVR-style names: no .tfrecord
        _write(tmp_path / f"kinetics_train-{k:05d}-of-00002",
               [_foreign_record(label, 6, "images", "label") for label in (k, k + 2)])
    pattern = str(tmp_path / "kinetics_train-*")
    one = EvalViews(num_frames=4, short_side=32, num_clips=1, num_crops=1)
    ds = vdata.eval_dataset(pattern, one, batch_size=4,
                            read=ReadOptions(image_key="images", label_key="label"))
    x, y = next(iter(ds))
    assert x.shape == (4, 1, 4, 32, 32, 3) and sorted(y.numpy().tolist()) == [0, 1, 2, 3]
    # The defaults name what is missing instead of skipping every record.
    with pytest.raises(ValueError, match=r"kinetics_train-00000-of-00002: record 0 has no "
                                         r"feature list 'image/encoded' \(it has \['images'\]"):
        vdata.eval_dataset(pattern, one, batch_size=4)
    with pytest.raises(ValueError, match=r"no context feature 'clip/label/index' \(it has "
                                         r"\['label'\]; set data.label_key"):
        vdata.eval_dataset(pattern, one, batch_size=4, read=ReadOptions(image_key="images"))


def test_config_keys_reach_the_pipeline(tmp_path):
    _write(tmp_path / "train-a", [_foreign_record(i % 2, 5, "frames", "y") for i in range(4)])
    cfg = config_from_dict({
        "model": {"num_classes": 2},
        "data": {"train_files": str(tmp_path / "train-*"), "eval_files": str(tmp_path / "train-*"),
                 "image_key": "frames", "label_key": "y", "num_frames": 4, "crop_size": 32,
                 "train_short_side": [32, 32], "test_short_side": 32},
        "train": {"batch_size": 2}, "eval": {"num_clips": 1, "num_crops": 1, "batch_size": 4}})
    read = adapters.read_options(cfg)
    assert (read.image_key, read.label_key) == ("frames", "y")
    from vov3d_tf.train.data import make_datasets
    train, ev = make_datasets(cfg)
    x, y = next(iter(train))
    assert x.shape == (2, 4, 32, 32, 3)
    x, y = next(iter(ev))
    assert x.shape == (4, 1, 4, 32, 32, 3) and sorted(y.numpy().tolist()) == [0, 0, 1, 1]


def _our_shards(directory, frame_rates):
    """One shard with our manifest, its split recording `frame_rates` {rate: records}."""
    name = fmt.shard_name("train", 0, 1)
    writer = shards.ShardWriter(str(directory / name))
    records = sum(frame_rates.values())
    for i in range(records):
        writer.write(fmt.make_sequence_example([_jpeg(i)] * 6, 0, "a", f"v{i}")
                     .SerializeToString())
    entry = shards.split_entry([{"file": name, "records": records, "sha256": writer.close(),
                                 "skipped": 0, "class_counts": [records],
                                 "frame_rates": frame_rates}], [], 1, "", {})
    shards.write_split(str(directory), "train", entry, ["a"])
    return entry


def test_frame_rate_is_recorded_and_dense_sampling_checks_it(tmp_path, capsys):
    dense = EvalViews(num_frames=2, sampling="dense", sampling_rate=2, num_clips=1, num_crops=1,
                      short_side=32)
    at30 = tmp_path / "at30"
    at30.mkdir()
    assert _our_shards(at30, {"30.0": 2})["frame_rate"] == 30.0
    vdata.eval_dataset(str(at30), dense, batch_size=1, split="train")
    err = capsys.readouterr().err
    assert "frame rate" not in err and "fps" not in err

    at12 = tmp_path / "at12"
    at12.mkdir()
    _our_shards(at12, {"12.0": 2})
    vdata.eval_dataset(str(at12), dense, batch_size=1, split="train")
    err = capsys.readouterr().err
    assert "are stored at 12 fps; dense sampling's stride 2 is defined at 30 fps" in err
    assert "(a window spans 0.33 s instead of 0.13 s for 2 frames)" in err

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    entry = _our_shards(mixed, {"25.0": 1, "29.97": 1})  # native rates kept: no single rate
    assert entry["frame_rate"] is None and entry["frame_rates"] == {"25.0": 1, "29.97": 1}
    for _ in range(2):  # said once, not at every dataset built
        vdata.eval_dataset(str(mixed), dense, batch_size=1, split="train")
    err = capsys.readouterr().err
    assert err.count("the stored frame rate of") == 1 and "is unknown" in err
    # Segment sampling (Something-Something) does not depend on the frame rate.
    segment = dataclasses.replace(dense, sampling="segment", sampling_rate=1)
    vdata.eval_dataset(str(at12), segment, batch_size=1, split="train")
    assert "fps" not in capsys.readouterr().err


def test_no_manifest_means_unknown_rate(tmp_path, capsys):
    _write(tmp_path / "k400-0", [_foreign_record(0, 4)])
    assert pipeline.check_frame_rate([str(tmp_path / "k400-0")], 5) is None
    assert "is unknown (no manifest" in capsys.readouterr().err
