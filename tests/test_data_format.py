"""Record format round trips: make_sequence_example -> serialize -> TF parse / Python parse."""
import pytest
import tensorflow as tf

from vov3d_tf.data import format as fmt


def _jpeg(value, h=12, w=20):
    return tf.io.encode_jpeg(tf.fill([h, w, 3], tf.constant(value, tf.uint8)), quality=95).numpy()


def test_round_trip_single_label():
    frames = [_jpeg(v) for v in (0, 100, 200)]
    ex = fmt.make_sequence_example(frames, 7, "Pushing something", "videos/a.webm")
    rec = fmt.parse_sequence_example(tf.constant(ex.SerializeToString()))
    assert int(rec["num_frames"]) == 3
    assert rec["labels"].numpy().tolist() == [7]
    assert rec["label_texts"].numpy().tolist() == [b"Pushing something"]
    assert rec["filename"].numpy() == b"videos/a.webm"
    assert [f for f in rec["frames"].numpy()] == frames  # stays encoded, byte-exact
    decoded = tf.io.decode_jpeg(rec["frames"][1]).numpy()
    assert decoded.shape == (12, 20, 3) and abs(int(decoded.mean()) - 100) <= 1


def test_round_trip_multi_label_and_python_reader():
    ex = fmt.make_sequence_example([_jpeg(5)], [3, 11], ["a", "b"], "x.mp4")
    serialized = ex.SerializeToString()
    rec = fmt.parse_sequence_example(serialized)
    assert rec["labels"].numpy().tolist() == [3, 11]
    frames, labels, texts, filename = fmt.read_sequence_example(serialized)
    assert (len(frames), labels, texts, filename) == (1, [3, 11], ["a", "b"], "x.mp4")


def test_keys_are_the_model_garden_dmvr_layout():
    ex = fmt.make_sequence_example([_jpeg(1)], 0, "c", "f")
    assert set(ex.context.feature) == {"clip/label/index", "clip/label/text", "video/filename"}
    assert set(ex.feature_lists.feature_list) == {"image/encoded"}


def test_parse_inside_tf_function_batch_of_records():
    records = [fmt.make_sequence_example([_jpeg(i)] * (i + 1), i, str(i), f"v{i}").SerializeToString()
               for i in range(4)]
    ds = tf.data.Dataset.from_tensor_slices(records).map(fmt.parse_sequence_example)
    assert [int(r["num_frames"]) for r in ds] == [1, 2, 3, 4]
    assert [int(r["labels"][0]) for r in ds] == [0, 1, 2, 3]


@pytest.mark.parametrize("kwargs, match", [
    ({"frames_jpeg": []}, "no frames"),
    ({"label_index": [1, 2], "label_text": ["a"]}, "2 label indices but 1 label texts"),
    ({"label_index": -1}, "negative label index"),
])
def test_bad_input_names_the_video(kwargs, match):
    args = {"frames_jpeg": [_jpeg(0)], "label_index": 0, "label_text": "a", "filename": "bad.mp4"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as e:
        fmt.make_sequence_example(**args)
    assert "bad.mp4" in str(e.value)


def test_shard_name():
    assert fmt.shard_name("train", 3, 16) == "train-00003-of-00016.tfrecord"
    assert fmt.shard_name("validation", 0, 1, gzip=True) == "validation-00000-of-00001.tfrecord.gz"
