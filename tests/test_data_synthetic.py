"""The synthetic temporal-order dataset: format, determinism, and that only ORDER carries the label."""
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vov3d_tf.data import format as fmt
from vov3d_tf.data.build import synthetic
from vov3d_tf.data.build.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    manifest = write_synthetic_dataset(str(out), num_train=160, num_eval=80, num_frames=8,
                                       size=32, num_classes=4, seed=3, num_shards=2)
    return out, manifest


def _videos(directory, split):
    videos, labels = [], []
    for path in sorted(directory.glob(f"{split}-*.tfrecord")):
        for s in tf.data.TFRecordDataset(str(path)):
            frames, label, texts, _ = fmt.read_sequence_example(s.numpy())
            assert texts == [synthetic.CLASS_NAMES[label[0]]]
            videos.append(np.stack([np.asarray(Image.open(io.BytesIO(f))) for f in frames]))
            labels.append(label[0])
    return np.stack(videos).astype(np.float32), np.array(labels)


def test_files_manifest_and_labels(dataset):
    out, manifest = dataset
    names = sorted(p.name for p in out.iterdir())
    assert names == ["eval-00000-of-00002.tfrecord", "eval-00001-of-00002.tfrecord", "labels.txt",
                     "manifest.json", "train-00000-of-00002.tfrecord",
                     "train-00001-of-00002.tfrecord"]
    assert (out / "labels.txt").read_text().split() == list(synthetic.CLASS_NAMES[:4])
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["class_histogram"] == [40, 40, 40, 40]
    assert manifest["splits"]["eval"]["class_histogram"] == [20, 20, 20, 20]
    assert [s["records"] for s in manifest["splits"]["train"]["shards"]] == [80, 80]
    videos, labels = _videos(out, "eval")
    assert videos.shape == (80, 8, 32, 32, 3)
    assert np.bincount(labels).tolist() == [20, 20, 20, 20]


def test_deterministic_byte_identical(dataset, tmp_path):
    _, manifest = dataset
    again = write_synthetic_dataset(str(tmp_path), num_train=160, num_eval=80, num_frames=8,
                                    size=32, num_classes=4, seed=3, num_shards=2)
    digests = lambda m: [s["sha256"] for sp in ("train", "eval") for s in m["splits"][sp]["shards"]]
    assert digests(again) == digests(manifest)
    other = write_synthetic_dataset(str(tmp_path / "b"), num_train=160, num_eval=80, num_frames=8,
                                    size=32, num_classes=4, seed=4, num_shards=2)
    assert digests(other)[0] != digests(manifest)[0]


def test_class_orders_are_distinct_permutations():
    for t in (8, 16):
        orders = [tuple(synthetic.class_order(c, t)) for c in range(synthetic.MAX_CLASSES)]
        assert len(set(orders)) == synthetic.MAX_CLASSES
        assert all(sorted(o) == list(range(t)) for o in orders)
    assert list(synthetic.class_order(2, 8)) == [0, 2, 4, 6, 7, 5, 3, 1]


def _x_track(videos):
    """Horizontal centre of mass of the digit per frame: (N, T)."""
    brightness = videos.mean(-1)
    weight = np.clip(brightness - np.median(brightness, axis=(2, 3), keepdims=True), 0, None)
    xs = np.arange(videos.shape[3], dtype=np.float32)
    return (weight.sum(2) * xs).sum(-1) / np.maximum(weight.sum((2, 3)), 1e-6)


def test_only_frame_order_carries_the_label(dataset):
    from sklearn.linear_model import LogisticRegression
    out, _ = dataset
    xtr, ytr = _videos(out, "train")
    xev, yev = _videos(out, "eval")
    track_tr, track_ev = _x_track(xtr), _x_track(xev)
    centre = lambda a: (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-6)

    def accuracy(ftr, fev):
        model = LogisticRegression(max_iter=2000).fit(ftr, ytr)
        return model.score(fev, yev)

    ordered = accuracy(centre(track_tr), centre(track_ev))
    bag_track = accuracy(np.sort(track_tr, 1), np.sort(track_ev, 1))
    pooled = lambda v: v.mean(1).reshape(len(v), 8, 4, 8, 4, 3).mean((2, 4)).reshape(len(v), -1)
    bag_pixels = accuracy(pooled(xtr) / 255, pooled(xev) / 255)  # mean frame, 8x8x3
    assert ordered >= 0.95, ordered  # order decides the class ...
    assert bag_track <= 0.45 and bag_pixels <= 0.45, (bag_track, bag_pixels)  # ... chance is 0.25


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="num_classes must be an int in \\[2, 6\\], got 7"):
        write_synthetic_dataset(str(tmp_path), num_classes=7)
    with pytest.raises(ValueError, match="size must be an int >= 32, got 16"):
        write_synthetic_dataset(str(tmp_path), size=16)


def test_cli(tmp_path, capsys):
    assert synthetic.main(["--output-dir", str(tmp_path), "--num-train", "8", "--num-eval", "4",
                           "--num-frames", "4", "--size", "32", "--num-classes", "2",
                           "--num-shards", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"] == {"num_records": 8, "class_histogram": [4, 4]}
    assert summary["labels"] == ["left_to_right", "right_to_left"]
