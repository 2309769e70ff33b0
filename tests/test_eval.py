"""Multi-view evaluation and precise BN on hand-built cases."""
import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from vov3d_tf import evaluation


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
