"""train_dataset / eval_dataset over real shards: shapes, labels, counts, determinism, sharding,
corruption, and the typed specs they take."""
import dataclasses
import gzip
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

import vov3d_tf.data as data
from vov3d_tf.data import format as fmt
from vov3d_tf.data import pipeline
from vov3d_tf.data.build.synthetic import write_synthetic_dataset
from vov3d_tf.data.specs import EvalViews, ReadOptions, TrainClip

CLIP = TrainClip(num_frames=4, crop_size=24, short_side_range=(28, 34))
VIEWS = EvalViews(num_frames=4, short_side=32, crop_size=24)  # 2 clips x 3 crops


def views(**changes):
    return dataclasses.replace(VIEWS, **changes)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    write_synthetic_dataset(str(out), num_train=40, num_eval=22, num_frames=8, size=32,
                            num_classes=4, seed=5, num_shards=2)
    return out


def _labels(ds):
    return np.concatenate([y.numpy() for _, y in ds])


def _expected_labels(directory, split):
    labels = []
    for path in sorted(directory.glob(f"{split}-*.tfrecord")):
        labels += [fmt.read_sequence_example(s.numpy())[1][0]
                   for s in tf.data.TFRecordDataset(str(path))]
    return np.array(labels)


def test_training_elements(shard_dir):
    ds = data.train_dataset(str(shard_dir / "train-*.tfrecord"), CLIP, batch_size=5, seed=0,
                            repeat=False)
    assert ds.element_spec[0].shape.as_list() == [5, 4, 24, 24, 3]
    assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.int32
    labels = _labels(ds)
    assert len(labels) == 40  # 8 full batches
    assert np.bincount(labels).tolist() == [10, 10, 10, 10]
    x, _ = next(iter(ds))
    assert -2.01 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 2.45


def test_eval_elements_in_file_order_with_remainder(shard_dir):
    ds = data.eval_dataset(str(shard_dir), VIEWS, batch_size=5, split="eval")
    batches = list(ds)
    assert [int(y.shape[0]) for _, y in batches] == [5, 5, 5, 5, 2]
    assert batches[0][0].shape == (5, 6, 4, 24, 24, 3)
    got = _labels(batches)
    assert sorted(got.tolist()) == sorted(_expected_labels(shard_dir, "eval").tolist())
    np.testing.assert_array_equal(got, _labels(data.eval_dataset(
        str(shard_dir), VIEWS, batch_size=5, split="eval")))


def test_dense_kinetics_views(shard_dir):
    ds = data.eval_dataset(str(shard_dir), views(sampling="dense", sampling_rate=2, num_clips=10),
                           batch_size=5, split="eval")
    assert ds.element_spec[0].shape.as_list() == [None, 30, 4, 24, 24, 3]  # 10 clips x 3 crops


def test_same_seed_same_batches_other_seed_differs(shard_dir):
    clip = dataclasses.replace(CLIP, sampling="dense", sampling_rate=1)
    make = lambda seed: data.train_dataset(str(shard_dir), clip, batch_size=5, split="train",
                                           seed=seed, repeat=False)
    (a, ya), (b, yb), (c, yc) = (next(iter(make(s))) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    # Epochs differ (reshuffled, re-augmented) but stay reproducible.
    ds = make(7)
    e1, e2 = _labels(ds), _labels(ds)
    assert not np.array_equal(e1, e2) and sorted(e1) == sorted(e2)


def test_file_level_sharding_and_input_context(shard_dir):
    kw = dict(split="eval", batch_size=5)
    one = views(num_clips=1, num_crops=1)
    parts = [_labels(data.eval_dataset(str(shard_dir), one, num_shards=2, shard_index=i, **kw))
             for i in range(2)]
    assert [len(p) for p in parts] == [11, 11]
    np.testing.assert_array_equal(np.concatenate(parts), _expected_labels(shard_dir, "eval"))
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    np.testing.assert_array_equal(_labels(data.eval_dataset(str(shard_dir), one,
                                                            input_context=ctx, **kw)), parts[1])
    with pytest.raises(ValueError, match="2 shard files for 3 input pipelines"):
        data.eval_dataset(str(shard_dir), one, num_shards=3, **kw)


def test_gzip_detected_from_name(shard_dir, tmp_path):
    for src in sorted(shard_dir.glob("eval-*.tfrecord")):
        with open(src, "rb") as f, gzip.open(tmp_path / (src.name + ".gz"), "wb") as g:
            g.write(f.read())
    ds = data.eval_dataset(str(tmp_path / "eval-*.gz"), views(num_clips=1), batch_size=5)
    assert sorted(_labels(ds)) == sorted(_expected_labels(shard_dir, "eval"))


def test_labels_from_manifest_and_file(shard_dir, tmp_path):
    assert data.load_labels(str(shard_dir)) == ["left_to_right", "right_to_left",
                                                "out_and_back_left", "out_and_back_right"]
    (tmp_path / "l.txt").write_text("a\nb c\n\n")
    assert data.load_labels(str(tmp_path / "l.txt")) == ["a", "b c"]


def test_missing_files_are_named(shard_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no shard files match"):
        data.train_dataset(str(tmp_path / "nothing-*.tfrecord"), CLIP, batch_size=5)
    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    (copy / "eval-00001-of-00002.tfrecord").unlink()
    with pytest.raises(FileNotFoundError, match="eval-00001-of-00002.tfrecord"):
        data.eval_dataset(str(copy), VIEWS, batch_size=5, split="eval")
    with pytest.raises(KeyError, match="split 'validation' not in"):
        data.eval_dataset(str(copy), VIEWS, batch_size=5, split="validation")


@pytest.fixture()
def truncated_dir(shard_dir, tmp_path):
    copy = tmp_path / "trunc"
    shutil.copytree(shard_dir, copy)
    path = copy / "eval-00000-of-00002.tfrecord"
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    readable = 0
    try:
        for _ in tf.data.TFRecordDataset(str(path)):
            readable += 1
    except tf.errors.DataLossError:
        pass
    return copy, path, readable


def test_truncated_shard_skip_counts_and_names_file(truncated_dir, capfd):
    copy, path, readable = truncated_dir
    pipeline.reset_corrupt_record_counts()
    ds = data.eval_dataset(str(copy), views(num_clips=1, num_crops=1), batch_size=5, split="eval")
    assert len(_labels(ds)) == readable + 11
    assert pipeline.corrupt_record_counts() == {str(path): 11 - readable}
    assert f"{path}: {11 - readable} record(s) unreadable" in capfd.readouterr().err


def test_truncated_shard_fail_names_file(truncated_dir):
    copy, path, _ = truncated_dir
    ds = data.eval_dataset(str(copy), VIEWS, batch_size=5, split="eval",
                           read=ReadOptions(on_corrupt="fail"))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"corrupt or truncated shard.*{path}"):
        _labels(ds)


@pytest.fixture()
def bad_record_file(shard_dir, tmp_path):
    path = tmp_path / "mixed-00000-of-00001.tfrecord"
    good = [s.numpy() for s in tf.data.TFRecordDataset(str(shard_dir / "eval-00000-of-00002.tfrecord"))]
    bad_jpeg = fmt.make_sequence_example([b"not a jpeg"] * 8, 1, "x", "bad.mp4").SerializeToString()
    no_label = fmt.make_sequence_example([good_frame for good_frame in
                                          fmt.read_sequence_example(good[0])[0]], 0, "x", "n.mp4")
    del no_label.context.feature[fmt.LABEL_INDEX_KEY]
    no_label.context.feature[fmt.LABEL_TEXT_KEY].bytes_list.value[:] = []
    with tf.io.TFRecordWriter(str(path)) as w:
        for record in [good[0], bad_jpeg, good[1], b"not a proto", no_label.SerializeToString(),
                       good[2]]:
            w.write(record)
    return path


def test_corrupt_records_are_skipped_and_counted(bad_record_file, capfd):
    pipeline.reset_corrupt_record_counts()
    ds = data.eval_dataset(str(bad_record_file), views(num_clips=1), batch_size=5)
    assert len(_labels(ds)) == 3
    assert pipeline.corrupt_record_counts() == {str(bad_record_file): 3}
    err = capfd.readouterr().err
    for index in (1, 3, 4):
        assert f"{bad_record_file}: record {index} cannot be parsed/decoded" in err


def test_corrupt_record_fail_names_file_and_record(bad_record_file):
    ds = data.train_dataset(str(bad_record_file), CLIP, batch_size=5, shuffle=False, repeat=False,
                            read=ReadOptions(on_corrupt="fail"))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"corrupt record\\] \\[1\\] \\[in\\] \\[{bad_record_file}"):
        _labels(ds)


def test_argument_errors(shard_dir):
    with pytest.raises(ValueError, match="EvalViews.sampling must be one of segment, dense, got "
                                         "'tsn'"):
        views(sampling="tsn")
    with pytest.raises(ValueError, match="is a directory: pass split="):
        data.eval_dataset(str(shard_dir), VIEWS, batch_size=5)
    with pytest.raises(ValueError, match="TrainClip.short_side_range: short side 28 is smaller "
                                         "than crop_size 64"):
        TrainClip(crop_size=64, short_side_range=(28, 30))
    with pytest.raises(ValueError, match="EvalViews.short_side: short side 32 is smaller than "
                                         "crop_size 40"):
        views(crop_size=40)
    with pytest.raises(ValueError, match="sampling_rate applies to dense sampling only"):
        dataclasses.replace(CLIP, sampling_rate=2)
    with pytest.raises(ValueError, match="ReadOptions.on_corrupt must be one of skip, fail, got "
                                         "'ignore'"):
        ReadOptions(on_corrupt="ignore")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        data.train_dataset(str(shard_dir), CLIP, batch_size=0, split="train")
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    assert manifest["splits"]["eval"]["num_records"] == 22


def test_a_parameter_that_does_not_apply_cannot_be_passed(shard_dir):
    """Training has no test views or file names; a test view has no flip or scale range."""
    with pytest.raises(TypeError, match="with_filename"):
        data.train_dataset(str(shard_dir), CLIP, batch_size=5, split="train", with_filename=True)
    with pytest.raises(TypeError, match="random_segments"):
        data.train_dataset(str(shard_dir), CLIP, batch_size=5, split="train",
                           random_segments=True)
    with pytest.raises(TypeError, match="shuffle"):
        data.eval_dataset(str(shard_dir), VIEWS, batch_size=5, split="eval", shuffle=True)
    with pytest.raises(TypeError, match="random_flip"):
        EvalViews(random_flip=True)
    with pytest.raises(TypeError, match="num_clips"):
        TrainClip(num_clips=2)


def test_specs_defaults_are_the_config_defaults():
    """The paper's recipe lives in the config's defaults; the specs take theirs from there."""
    from vov3d_tf import adapters
    from vov3d_tf.config import Config
    assert adapters.train_clip(Config()) == TrainClip()
    assert adapters.eval_views(Config()) == EvalViews()
    assert adapters.read_options(Config()) == ReadOptions()
    assert (TrainClip().crop_size, TrainClip().short_side_range, EvalViews().crop) == (
        224, (256, 320), 256)
    assert EvalViews().num_views == 6 and EvalViews().view_shape == (16, 256, 256, 3)


def test_random_test_segments_are_reproducible(shard_dir):
    kw = dict(split="eval", batch_size=5)
    two = views(num_clips=2, num_crops=1)
    a, b = (next(iter(data.eval_dataset(str(shard_dir), two, random_segments=True, seed=3,
                                        **kw)))[0] for _ in range(2))
    spread = next(iter(data.eval_dataset(str(shard_dir), two, **kw)))[0]
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.shape == spread.shape == (5, 2, 4, 24, 24, 3)
    assert not np.array_equal(a.numpy(), spread.numpy())
