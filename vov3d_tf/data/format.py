"""The shard record format: one `tf.train.SequenceExample` per video.

The layout is the one TF Model Garden and DMVR use for video classification, so their
tools read our shards and we read theirs:

    context        clip/label/index   int64 list (a list, so multi-label works; empty for a
                                      video whose label is hidden, e.g. a test split)
                   clip/label/text    bytes list (class names, same order as the indices)
                   video/filename     bytes      (source path or id, for error messages)
    feature list   image/encoded      one JPEG (RGB) per frame, all frames the same size

Parsing never decodes a JPEG: `parse_sequence_example` returns the encoded frames, so
the pipeline gathers the few sampled frames first and decodes only those.

Shards written by other tools may name the frames and labels differently: `image_key` and
`label_key` (config `data.image_key` / `data.label_key`, Model Garden's `image_field_key` /
`label_field_key`) select them; label texts and file names are optional when parsing.
"""
import tensorflow as tf

LABEL_INDEX_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
FILENAME_KEY = "video/filename"
IMAGE_KEY = "image/encoded"

# Shard files are `{split}-{i:05d}-of-{n:05d}.tfrecord[.gz]` with a manifest.json beside them.
SHARD_NAME = "{split}-{index:05d}-of-{count:05d}.tfrecord"
GZIP_SUFFIX = ".gz"
MANIFEST_NAME = "manifest.json"

# The stored frames (the builder's frame policy, `video_io`; predict and the serving client read
# a video file the same way): short side resized to SHORT_SIDE (never upscaled), JPEG at
# JPEG_QUALITY, RGB. Dense sampling (Kinetics) is defined at DENSE_FPS: PySlowFast decodes
# Kinetics at TARGET_FPS 30, so the builder stores Kinetics at that rate.
SHORT_SIDE = 256
JPEG_QUALITY = 90
DENSE_FPS = 30.0


def shard_name(split, index, count, gzip=False):
    """File name of shard `index` (0-based) of `count` for `split`."""
    return SHARD_NAME.format(split=split, index=index, count=count) + (GZIP_SUFFIX if gzip else "")


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _to_bytes(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def make_sequence_example(frames_jpeg, label_index, label_text, filename):
    """Builds the record of one video.

    Args:
      frames_jpeg: list of JPEG-encoded frames (bytes), in time order; at least one.
      label_index: class index (int) or list of indices (multi-label); [] for a hidden label
        (the record keeps both label keys, with empty lists).
      label_text: class name (str) or list of names, one per index ([] with []).
      filename: the source video's path or id (str), kept for error messages.
    """
    if not frames_jpeg:
        raise ValueError(f"make_sequence_example: video {filename!r} has no frames")
    indices = [int(i) for i in _as_list(label_index)]
    texts = [_to_bytes(t) for t in _as_list(label_text)]
    if any(i < 0 for i in indices):
        raise ValueError(f"make_sequence_example: negative label index {indices} for {filename!r}")
    if len(texts) != len(indices):
        raise ValueError(f"make_sequence_example: {len(indices)} label indices but {len(texts)} "
                         f"label texts for {filename!r}")
    example = tf.train.SequenceExample()
    example.context.feature[LABEL_INDEX_KEY].int64_list.value.extend(indices)
    example.context.feature[LABEL_TEXT_KEY].bytes_list.value.extend(texts)
    example.context.feature[FILENAME_KEY].bytes_list.value.append(_to_bytes(filename))
    frames = example.feature_lists.feature_list[IMAGE_KEY]
    for jpeg in frames_jpeg:
        frames.feature.add().bytes_list.value.append(bytes(jpeg))
    return example


def _context_features(label_key):
    features = {
        label_key: tf.io.VarLenFeature(tf.int64),
        LABEL_TEXT_KEY: tf.io.VarLenFeature(tf.string),
        FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    if label_key in (LABEL_TEXT_KEY, FILENAME_KEY):
        raise ValueError(f"label_key {label_key!r} names a text feature; it must name the int64 "
                         f"class indices")
    return features


def parse_sequence_example(serialized, image_key=IMAGE_KEY, label_key=LABEL_INDEX_KEY):
    """Parses one serialized record (graph-safe; JPEGs stay encoded).

    `image_key`: the feature list of encoded frames; `label_key`: the context int64 list of
    class indices (defaults: this project's / Model Garden's / DMVR's keys).
    Returns a dict: `frames` string (N,) encoded JPEGs, `num_frames` int32 scalar N,
    `labels` int64 (L,), `label_texts` string (L,), `filename` string scalar.
    """
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=_context_features(label_key),
        sequence_features={image_key: tf.io.FixedLenSequenceFeature([], tf.string)})
    frames = sequence[image_key]
    return {
        "frames": frames,
        "num_frames": tf.shape(frames, out_type=tf.int32)[0],
        "labels": tf.sparse.to_dense(context[label_key]),
        "label_texts": tf.sparse.to_dense(context[LABEL_TEXT_KEY], default_value=""),
        "filename": context[FILENAME_KEY],
    }


def read_sequence_example(serialized):
    """Python-side parse of one record (for tools and tests): (frames, labels, texts, filename)."""
    example = tf.train.SequenceExample.FromString(serialized)
    ctx = example.context.feature
    frames = [f.bytes_list.value[0] for f in example.feature_lists.feature_list[IMAGE_KEY].feature]
    labels = list(ctx[LABEL_INDEX_KEY].int64_list.value)
    texts = [t.decode("utf-8") for t in ctx[LABEL_TEXT_KEY].bytes_list.value]
    filename = ctx[FILENAME_KEY].bytes_list.value[0].decode("utf-8") if FILENAME_KEY in ctx else ""
    return frames, labels, texts, filename
