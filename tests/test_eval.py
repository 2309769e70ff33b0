"""Multi-view evaluation and precise BN on hand-built cases."""
import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from vov3d_tf.train import evaluation


def channel_mean_model(num_classes=3):
    """logits = mean over (T, H, W) of the channels (identity dense): hand-computable."""
    model = keras.Sequential([keras.Input((2, 4, 4, 3)), keras.layers.GlobalAveragePooling3D(),
                              keras.layers.Dense(num_classes, use_bias=False)])
    model.layers[-1].set_weights([np.eye(3, num_classes, dtype=np.float32)])
    return model


def views_with_logits(logits):
    """(videos, views, 3) wanted logits -> (videos, views, T, H, W, 3) constant views."""
    logits = np.asarray(logits, np.float32)
    return np.broadcast_to(logits[:, :, None, None, None, :],
                           logits.shape[:2] + (2, 4, 4, 3)).copy()


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_multi_view_sums_softmax_not_logits(tmp_path):
    logits = np.array([
        [[10, 0, 0], [0, 3, 0], [0, 3, 0]],   # probs sum -> class 1; logit sum -> class 0
        [[0, 0, 5], [0, 0, 5], [0, 1, 5]],    # class 2
        [[1, 0, 0], [1, 0, 0], [1, 0.5, 0]],  # class 0
    ], np.float32)
    labels = np.array([1, 2, 2], np.int32)
    ds = tf.data.Dataset.from_tensor_slices((views_with_logits(logits), labels)).batch(2)
    result = evaluation.evaluate(channel_mean_model(), ds, 3, class_names=["a", "b", "c"],
                                 output_dir=str(tmp_path), verbose=False, prefix="val_")
    expected_scores = softmax(logits).sum(axis=1)
    assert expected_scores.argmax(1).tolist() == [1, 2, 0]
    assert logits.sum(axis=1).argmax(1).tolist() == [0, 2, 0]  # what averaging logits gives
    assert result["top1"] == pytest.approx(2 / 3)
    assert result["top5"] == 1.0
    assert (result["num_videos"], result["num_views"]) == (3, 3)
    assert result["confusion"] == [[0, 0, 0], [0, 1, 0], [1, 0, 1]]
    acc = result["per_class_accuracy"]
    assert np.isnan(acc[0]) and acc[1] == 1.0 and acc[2] == 0.5
    with open(result["per_class_csv"]) as f:
        rows = list(csv.reader(f))
    assert rows == [["class_index", "class_name", "videos", "correct", "accuracy"],
                    ["0", "a", "0", "0", ""], ["1", "b", "1", "1", "1.000000"],
                    ["2", "c", "2", "1", "0.500000"]]
    assert result["per_class_csv"].endswith("val_per_class_accuracy.csv")
    with open(result["confusion_png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_single_clip_batches_count_as_one_view():
    logits = np.array([[[0, 2, 0]], [[3, 0, 0]]], np.float32)
    clips = views_with_logits(logits)[:, 0]  # (B, T, H, W, 3)
    ds = tf.data.Dataset.from_tensor_slices((clips, np.array([1, 1]))).batch(2)
    result = evaluation.evaluate(channel_mean_model(), ds, 3, verbose=False)
    assert result["num_views"] == 1 and result["top1"] == 0.5


def test_topk_and_errors():
    scores = np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([2, 0, 0])
    assert evaluation.topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert evaluation.topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert evaluation.topk_accuracy(scores, labels, 5) == 1.0
    np.testing.assert_allclose(evaluation.multi_view_scores([[[0.2, 0.8], [0.6, 0.4]]]),
                               [[0.8, 1.2]])
    ds = tf.data.Dataset.from_tensor_slices((views_with_logits(np.zeros((1, 1, 3))),
                                             np.array([0]))).batch(1)
    with pytest.raises(ValueError, match="model has 3 outputs but num_classes is 4"):
        evaluation.evaluate(channel_mean_model(), ds, 4, verbose=False)
    with pytest.raises(ValueError, match="evaluation dataset is empty"):
        evaluation.evaluate(channel_mean_model(), ds.take(0), 3, verbose=False)


def test_precise_bn_is_the_average_of_batch_statistics():
    model = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization(momentum=0.9)])
    bn = model.layers[-1]
    batches = [np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[4.0, 0.0], [4.0, 2.0]]),
               np.array([[1.0, 1.0], [3.0, 5.0]])]
    ds = tf.data.Dataset.from_tensor_slices(
        (np.concatenate(batches).astype(np.float32), np.zeros(6))).batch(2)
    used = evaluation.precise_bn(model, ds.repeat(), num_batches=3)
    assert used == 3
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               np.mean([b.mean(0) for b in batches], axis=0), rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               np.mean([b.var(0) for b in batches], axis=0), rtol=1e-5)
    assert bn.momentum == 0.9  # restored
    np.testing.assert_array_equal(bn.gamma.numpy(), [1.0, 1.0])
    assert evaluation.precise_bn(model, ds, num_batches=0) == 0


def test_predictions_csv_with_filenames_and_hidden_labels(tmp_path):
    logits = np.array([[[0, 2, 0]], [[3, 0, 1]], [[0, 1, 4]]], np.float32)
    labels = np.array([1, 2, -1], np.int32)  # the third video's label is hidden (test set)
    files = np.array([b"videos/12.webm", b"34.webm", b"a/b/56.mp4"])
    ds = tf.data.Dataset.from_tensor_slices((views_with_logits(logits), labels, files)).batch(2)
    result = evaluation.evaluate(channel_mean_model(), ds, 3, class_names=["a", "b", "c"],
                                 output_dir=str(tmp_path), verbose=False, top_k=2)
    # Metrics over the labelled videos only; predictions for all.
    assert (result["num_videos"], result["num_labelled"]) == (3, 2)
    assert result["top1"] == 0.5 and result["confusion"] == [[0, 0, 0], [0, 1, 0], [1, 0, 0]]
    with open(result["predictions_csv"], newline="") as f:
        rows = list(csv.reader(f))
    p = softmax(logits[:, 0])
    assert rows[0] == ["video_id", "filename", "true_index", "true_label", "label_1", "index_1",
                       "score_1", "label_2", "index_2", "score_2"]
    assert rows[1] == ["12", "videos/12.webm", "1", "b", "b", "1", f"{p[0, 1]:.6f}", "a", "0",
                       f"{p[0, 0]:.6f}"]
    assert rows[2] == ["34", "34.webm", "2", "c", "a", "0", f"{p[1, 0]:.6f}", "c", "2",
                       f"{p[1, 2]:.6f}"]
    assert rows[3] == ["56", "a/b/56.mp4", "-1", "", "c", "2", f"{p[2, 2]:.6f}", "b", "1",
                       f"{p[2, 1]:.6f}"]
    # Only hidden labels: predictions still written, metrics NaN.
    ds = tf.data.Dataset.from_tensor_slices((views_with_logits(logits), -np.ones(3, np.int32),
                                             files)).batch(3)
    hidden = evaluation.evaluate(channel_mean_model(), ds, 3, output_dir=str(tmp_path / "test"),
                                 verbose=False)
    assert np.isnan(hidden["top1"]) and hidden["num_labelled"] == 0
    with open(hidden["predictions_csv"]) as f:
        assert len(f.read().splitlines()) == 4
    bad = tf.data.Dataset.from_tensor_slices((views_with_logits(logits), np.array([0, -2, 1]))
                                             ).batch(3)
    with pytest.raises(ValueError, match=r"label -2 out of range for 3 classes \(-1: unknown\)"):
        evaluation.evaluate(channel_mean_model(), bad, 3, verbose=False)


def test_views_cap_gives_the_same_logits_and_results(tmp_path):
    from vov3d_tf import create_model, fold_batchnorm
    tf.random.set_seed(1)
    model = create_model("vov3d_m", 5, base_width=8, num_conv=1, blocks=(1, 1, 1, 1))
    w = model.get_layer("head_projection").get_weights()
    model.get_layer("head_projection").set_weights(
        [np.random.default_rng(0).normal(0, 0.5, w[0].shape).astype(np.float32), w[1]])
    model = fold_batchnorm(model)  # as evaluate would (once here, not per call)
    # Two videos x Kinetics' 30 test views (10 clips x 3 crops) of 4 x 32 x 32.
    views = tf.random.stateless_normal([2, 30, 4, 32, 32, 3], seed=[1, 2])
    full = evaluation._view_logits_fn(model)(views).numpy()
    capped = evaluation._view_logits_fn(model, 7)(views).numpy()  # 7 does not divide 60
    np.testing.assert_allclose(capped, full, atol=1e-6, rtol=0)
    assert full.shape == (2, 30, 5) and np.ptp(full) > 0.1
    # The capped evaluation gives the uncapped logits' predictions and metrics.
    ds = tf.data.Dataset.from_tensor_slices((views, np.array([0, 3]))).batch(2)
    result = evaluation.evaluate(model, ds, 5, output_dir=str(tmp_path), verbose=False,
                                 max_views_per_batch=7)
    probs = softmax(full.astype(np.float64)).mean(axis=1)
    order = np.argsort(-probs, axis=1, kind="stable")
    assert result["top1"] == np.mean(order[:, 0] == [0, 3])
    with open(result["predictions_csv"]) as f:
        rows = list(csv.reader(f))[1:]
    assert [[int(i) for i in r[5::3]] for r in rows] == order.tolist()
    np.testing.assert_allclose(np.array([r[6::3] for r in rows], float),
                               np.take_along_axis(probs, order, axis=1), atol=2e-6)
    with pytest.raises(ValueError, match="max_views_per_batch must be a positive int"):
        evaluation.evaluate(model, ds, 5, verbose=False, max_views_per_batch=0)


def test_eval_only_writes_predictions_csv(tmp_path):
    from vov3d_tf import create_model
    from vov3d_tf.train import training
    from vov3d_tf.config import config_from_dict
    from vov3d_tf.data import format as fmt
    from vov3d_tf.data import eval_dataset, train_dataset
    from vov3d_tf.data.build.synthetic import write_synthetic_dataset
    from vov3d_tf.data.specs import EvalViews, TrainClip
    from vov3d_tf.data.shards import ShardWriter
    data = tmp_path / "data"
    write_synthetic_dataset(str(data), num_train=3, num_eval=5, num_frames=6, size=32,
                            num_classes=3, num_shards=1)
    model = create_model("vov3d_m", 3, base_width=8, num_conv=1, blocks=(1, 1, 1, 1))
    model.save(tmp_path / "m.keras")
    cfg = config_from_dict({
        "model": {"num_classes": 3, "base_width": 8, "num_conv": 1, "blocks": [1, 1, 1, 1]},
        "data": {"train_files": f"{data}/train-*.tfrecord", "eval_files": f"{data}/eval-*.tfrecord",
                 "num_frames": 4, "crop_size": 32, "train_short_side": [32, 32],
                 "test_short_side": 32},
        "train": {"output_dir": str(tmp_path / "run")},
        "eval": {"batch_size": 2, "num_clips": 2, "num_crops": 3, "max_views_per_batch": 4}})
    metrics = training.evaluate_run(cfg, weights=str(tmp_path / "m.keras"))
    assert metrics["predictions_csv"] == str(tmp_path / "run" / "eval" / "predictions.csv")
    with open(metrics["predictions_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    records = [fmt.read_sequence_example(r.numpy()) for r in
               tf.data.TFRecordDataset(sorted(map(str, data.glob("eval-*.tfrecord"))))]
    assert sorted((r["filename"], int(r["true_index"])) for r in rows) == sorted(
        (name, labels[0]) for _, labels, _, name in records)
    assert all(r["video_id"] == os.path.splitext(os.path.basename(r["filename"]))[0]
               for r in rows)
    top1 = np.mean([r["index_1"] == r["true_index"] for r in rows])
    assert metrics["top1"] == pytest.approx(top1) and metrics["num_views"] == 6

    # Unlabelled records (a test split): label -1 with with_filename, corrupt without.
    path = str(tmp_path / "test-00000-of-00001.tfrecord")
    writer = ShardWriter(path)
    frames = records[0][0]
    writer.write(fmt.make_sequence_example(frames, 1, "b", "x/labelled.webm").SerializeToString())
    writer.write(fmt.make_sequence_example(frames, [], [], "x/hidden.webm").SerializeToString())
    writer.close()
    views = EvalViews(num_frames=4, short_side=32, num_clips=1)
    (views, labels, names), = eval_dataset(path, views, batch_size=2,
                                           with_filename=True).as_numpy_iterator()
    assert views.shape == (2, 3, 4, 32, 32, 3) and labels.tolist() == [1, -1]
    assert names.tolist() == [b"x/labelled.webm", b"x/hidden.webm"]
    (_, labels), = eval_dataset(path, EvalViews(num_frames=4, short_side=32, num_clips=1),
                                batch_size=2).as_numpy_iterator()  # the hidden one: skipped
    assert labels.tolist() == [1]
    with pytest.raises(TypeError, match="with_filename"):  # training has no file names
        train_dataset(path, TrainClip(num_frames=4), batch_size=2, with_filename=True)
