"""`make_dataset`: shards -> batches of normalized clips, with the paper's sampling (section 12).

    files --(file-level shard per worker/replica, shuffle)--> parallel interleave of TFRecord
    readers --(record shuffle)--> parallel parse + gather sampled frames + decode + augment
    --(corrupt records skipped & counted, or fail naming file/record)--> batch --> prefetch

Named steps (as Model Garden's video_input.py splits decode / process / parse):
`_shard_files` (this worker's files), `_read_records` (interleaved readers, shuffles),
`parse_train_record` / `parse_eval_record` (one serialized record -> clip or views + label,
through the pure functions of `preprocess`), `_parse_or_skip` (corrupt-record handling).

Training elements: (clips float32 (B, T, crop, crop, 3), labels int32 (B,)).
Eval elements:     (views float32 (B, V, T, c, c, 3), labels int32 (B,)), V = num_clips * num_crops,
                   clip-major; sum the softmaxes of a video's V views. With `with_filename`:
                   (views, labels, filenames string (B,)) (`video/filename`, for prediction files).

Hidden labels (a test split, manifest `hidden_labels`: build_shards writes its records with empty
label lists): at eval their label is -1; training on such shards is refused, naming the file and
split (`check_labelled`).
"""
import collections
import functools
import os
import sys
import threading

import numpy as np
import tensorflow as tf

from vov3d_tf import fileio
from vov3d_tf.data import format as fmt
from vov3d_tf.data import preprocess
from vov3d_tf.data import shards
from vov3d_tf.data.labels import read_labels

AUTOTUNE = tf.data.AUTOTUNE
ON_CORRUPT = ("skip", "fail")

# Paper defaults per sampling mode (ARCHITECTURE.md section 12): SS / Kinetics.
DEFAULTS = {
    "segment": {"sampling_rate": 1, "inverse_uniform": True, "random_flip": False, "num_clips": 2},
    "dense": {"sampling_rate": 5, "inverse_uniform": False, "random_flip": True, "num_clips": 10},
}

_skipped = collections.Counter()
_skipped_lock = threading.Lock()


def corrupt_record_counts():
    """{shard path: records skipped as corrupt} since the process started (or the last reset)."""
    with _skipped_lock:
        return dict(_skipped)


def reset_corrupt_record_counts():
    with _skipped_lock:
        _skipped.clear()


def _report_skip(path, index, lost):
    path = path.decode() if isinstance(path, bytes) else str(path)
    index, lost = int(index), int(lost)
    with _skipped_lock:
        _skipped[path] += lost
    if index < 0:
        print(f"vov3d_tf.data: WARNING: {path}: {lost} record(s) unreadable at the end of the file "
              f"(truncated or corrupt shard); skipped", file=sys.stderr, flush=True)
    else:
        print(f"vov3d_tf.data: WARNING: {path}: record {index} cannot be parsed/decoded; skipped "
              f"(`python -m vov3d_tf.data.validate` names the reason)", file=sys.stderr, flush=True)
    return np.int64(lost)


def load_labels(path):
    """Class names (index order) from a shard directory's manifest, or from a labels file
    (one class per line, read by `vov3d_tf.data.labels.read_labels`)."""
    if fileio.isdir(path):
        return shards.load_labels(path)
    return read_labels(path)


def resolve_files(file_pattern, split=None):
    """[(path, expected records or -1)] and the compression ("" / "GZIP") of a file pattern.

    `file_pattern`: a glob, a list of paths, or a shard directory (with `split`). Record counts
    and compression come from a manifest.json beside the files when there is one; otherwise
    compression is "GZIP" for names ending in .gz.
    """
    files, compression, _ = _resolve(file_pattern, split)
    return files, compression


def _resolve(file_pattern, split=None):
    """`resolve_files`, and {path: (split, manifest path)} for those files that belong to a
    split whose labels are hidden (manifest `hidden_labels`: a test split written by
    build_shards), from the same manifest reads."""
    if isinstance(file_pattern, (list, tuple)):
        paths = [os.fspath(p) for p in file_pattern]
    elif isinstance(file_pattern, os.PathLike):
        return _resolve(os.fspath(file_pattern), split)
    elif fileio.isdir(file_pattern):
        if split is None:
            raise ValueError(f"{file_pattern!r} is a directory: pass split= (one of its manifest's "
                             f"splits) or a file pattern")
        paths = shards.split_files(file_pattern, split)
    else:
        paths = fileio.glob(file_pattern)
    if not paths:
        raise FileNotFoundError(f"no shard files match {file_pattern!r}")
    missing = [p for p in paths if not fileio.exists(p)]
    if missing:
        raise FileNotFoundError(f"shard files not found: {missing}")
    expected, compression, hidden_splits = {}, {}, {}
    for directory in sorted({fileio.dirname(fileio.abspath(p)) for p in paths}):
        manifest = shards.manifest_path(directory)
        if not fileio.exists(manifest):
            continue
        for name, entry in shards.read_manifest(directory)["splits"].items():
            for s in entry["shards"]:
                key = fileio.join(directory, s["file"])
                expected[key] = int(s["records"])
                compression[key] = entry.get("compression", "")
                if entry.get("hidden_labels"):
                    hidden_splits[key] = (name, manifest)
    files, kinds, hidden = [], set(), {}
    for p in paths:
        key = fileio.abspath(p)
        files.append((p, expected.get(key, -1)))
        kinds.add(compression.get(key, "GZIP" if p.endswith(fmt.GZIP_SUFFIX) else ""))
        if key in hidden_splits:
            hidden[p] = hidden_splits[key]
    if len(kinds) > 1:
        raise ValueError(f"{file_pattern!r} mixes compressed and uncompressed shards")
    return files, kinds.pop(), hidden


def _read_file(path, expected, *, compression, on_corrupt, counts_known):
    """(path, record index, serialized) for every readable record of one shard.

    A framing error (truncation, CRC mismatch) ends the file; with a known record count the
    loss is reported (skip) or raised naming the file (fail)."""
    records = tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=1 << 20)
    if on_corrupt == "fail" and not counts_known:  # no manifest: let the reader's error through
        return records.enumerate().map(lambda i, s: (path, i, s))
    records = records.ignore_errors(log_warning=True).enumerate().map(
        lambda i, s: (path, i, s, tf.constant(False)))
    end = tf.data.Dataset.from_tensors((path, tf.constant(-1, tf.int64), tf.constant(""),
                                        tf.constant(True)))

    def count(n, element):
        p, i, s, is_end = element
        return n + tf.cast(tf.logical_not(is_end), tf.int64), (p, tf.where(is_end, n, i), s, is_end)

    def keep(p, i, s, is_end):
        lost = tf.maximum(expected - i, 0)
        bad = tf.logical_and(is_end, lost > 0)
        if on_corrupt == "fail":
            check = tf.debugging.Assert(tf.logical_not(bad), [
                "corrupt or truncated shard", p, "records readable:", i, "expected:", expected])
            with tf.control_dependencies([check]):
                return tf.logical_not(is_end)
        reported = tf.cond(bad, lambda: tf.numpy_function(
            _report_skip, [p, tf.constant(-1, tf.int64), lost], tf.int64, stateful=True),
            lambda: tf.constant(0, tf.int64))
        with tf.control_dependencies([reported]):
            return tf.logical_not(is_end)

    return (records.concatenate(end).scan(tf.constant(0, tf.int64), count).filter(keep)
            .map(lambda p, i, s, is_end: (p, i, s)))


def make_dataset(file_pattern, *, training, num_frames=16, batch_size=8, split=None,
                 sampling="segment", sampling_rate=None, crop_size=preprocess.CROP_SIZE,
                 scale_range=preprocess.TRAIN_SCALE_RANGE, inverse_uniform=None, random_flip=None,
                 test_short_side=preprocess.TEST_SHORT_SIDE, test_crop_size=None, num_clips=None,
                 num_crops=3, random_test_segments=False, shuffle=None, shuffle_buffer=64,
                 seed=None, repeat=False,
                 num_shards=1, shard_index=0, input_context=None, on_corrupt="skip",
                 drop_remainder=None, deterministic=None, num_parallel_calls=AUTOTUNE,
                 prefetch=None, with_filename=False, image_key=fmt.IMAGE_KEY,
                 label_key=fmt.LABEL_INDEX_KEY):
    """A tf.data pipeline over video shards.

    Args:
      file_pattern: glob of shard files, list of paths, or a shard directory (with `split`).
      training: random sampling/augmentation and (B, T, c, c, 3) clips if True; deterministic
        multi-view test protocol and (B, V, T, c, c, 3) views if False.
      num_frames: T frames per clip.
      batch_size: videos per batch of this dataset (per replica with `input_context`).
      sampling: "segment" (Something-Something) or "dense" (Kinetics); None-valued options
        below take the paper's default for it (DEFAULTS).
      sampling_rate: frame stride of dense sampling (5 at 30 fps); 1 for segment.
      crop_size: training crop (224).
      scale_range: training short side range [lo, hi] (256, 320).
      inverse_uniform: short side = round(1 / U(1/hi, 1/lo)) (SS configs) instead of U(lo, hi).
      random_flip: horizontal flip p = 0.5 in training (Kinetics only by default).
      test_short_side, test_crop_size: test resize and crop (256, 256 = the short side).
      num_clips, num_crops: test views per video (2 x 3 for segment, 10 x 3 for dense).
      random_test_segments: segment sampling at test draws a random frame per segment for each
        clip (the reference implementation's protocol; reproducible, from `seed` or 0) instead
        of fixed positions (k + 0.5) / num_clips in each segment.
      shuffle: shuffle files and records (default: = training); shuffle_buffer: records
        held for shuffling (each is a whole video's JPEGs: mind the memory).
      seed: makes shuffling and augmentation reproducible (and the order deterministic).
      repeat: repeat forever (for step-based training).
      num_shards, shard_index: file-level sharding (this pipeline reads files[shard_index::
        num_shards]); `input_context` (tf.distribute.InputContext) overrides both.
      on_corrupt: "skip" (warn naming the file and record, count in corrupt_record_counts())
        or "fail" (raise naming them).
      drop_remainder: default = training.
      deterministic: element order reproducible (default: with a seed, or at eval).
      num_parallel_calls: records processed at once (AUTOTUNE: up to one per core); each holds
        its output in memory (eval: V x T x c x c x 3 floats, 377 MB for 30 views at 256).
      prefetch: batches prepared ahead (default AUTOTUNE in training, 1 at eval).
      with_filename: eval only: elements (views, labels, filenames), each video's
        `video/filename`; a record without a label gets label -1 (hidden test labels, e.g. the
        Something-Something test split) instead of counting as corrupt. Without it, records
        of a split whose manifest says `hidden_labels` get -1 too; a label-less record of a
        labelled split counts as corrupt.
      image_key, label_key: the records' feature list of JPEG frames and context int64 class
        indices (for shards written by other tools, e.g. Model Garden's image_field_key /
        label_field_key; files need no .tfrecord extension: pass a glob or a list).
    """
    if sampling not in DEFAULTS:
        raise ValueError(f"sampling must be one of {tuple(DEFAULTS)}, got {sampling!r}")
    if with_filename and training:
        raise ValueError("with_filename is for evaluation (training=False)")
    if on_corrupt not in ON_CORRUPT:
        raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
    for name, value in (("num_frames", num_frames), ("batch_size", batch_size),
                        ("num_crops", num_crops), ("num_shards", num_shards)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    d = DEFAULTS[sampling]
    sampling_rate = d["sampling_rate"] if sampling_rate is None else sampling_rate
    inverse_uniform = d["inverse_uniform"] if inverse_uniform is None else inverse_uniform
    random_flip = d["random_flip"] if random_flip is None else random_flip
    num_clips = d["num_clips"] if num_clips is None else num_clips
    test_crop_size = test_short_side if test_crop_size is None else test_crop_size
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder
    deterministic = (seed is not None or not training) if deterministic is None else deterministic
    if training:
        preprocess.check_crop_size(min(scale_range), crop_size, "make_dataset scale_range")
    else:
        preprocess.check_crop_size(test_short_side, test_crop_size, "make_dataset test_short_side")
    if input_context is not None:
        num_shards, shard_index = input_context.num_input_pipelines, input_context.input_pipeline_id
    # One seed per random step (file order, record order, augmentation), all from `seed`.
    seeds = [int(s) for s in np.random.SeedSequence(0 if seed is None else seed).generate_state(3)]
    file_seed, record_seed, aug_seed = seeds if seed is not None else (None, None, None)

    all_files, compression, hidden = _resolve(file_pattern, split)
    if training:
        _refuse_hidden(hidden, len(all_files), file_pattern, "training")
    files = _shard_files(all_files, file_pattern, num_shards, shard_index)
    check_record_keys(files[0][0], compression, image_key, label_key, need_label=training)
    hidden_files = () if training else tuple(sorted(p for p, _ in files if p in hidden))
    if sampling == "dense":
        check_frame_rate([p for p, _ in files], sampling_rate, num_frames)
    ds = _read_records(files, compression, on_corrupt=on_corrupt, shuffle=shuffle,
                       shuffle_buffer=shuffle_buffer, file_seed=file_seed,
                       record_seed=record_seed, repeat=repeat, deterministic=deterministic)
    if training:
        ds = _with_seeds(ds, aug_seed, rerandomize_each_iteration=True)
        parse = functools.partial(
            parse_train_record, num_frames=num_frames, crop_size=crop_size, sampling=sampling,
            sampling_rate=sampling_rate, scale_range=scale_range,
            inverse_uniform=inverse_uniform, random_flip=random_flip, image_key=image_key,
            label_key=label_key)
        out_shape = [num_frames, crop_size, crop_size, 3]
    else:
        if random_test_segments:  # reference protocol: random frame per segment and view,
            ds = _with_seeds(ds, seeds[2])  # reproducible (from `seed`, or 0)
        else:
            ds = ds.map(lambda p, i, s: (p, i, s, tf.zeros([2], tf.int64)))
        parse = functools.partial(
            parse_eval_record, num_frames=num_frames, crop_size=test_crop_size,
            sampling=sampling, sampling_rate=sampling_rate, short_side=test_short_side,
            num_clips=num_clips, num_crops=num_crops, random_segments=random_test_segments,
            with_filename=with_filename, hidden_files=hidden_files, image_key=image_key,
            label_key=label_key)
        out_shape = [num_clips * num_crops, num_frames, test_crop_size, test_crop_size, 3]
    ds = _parse_or_skip(ds, parse, out_shape, on_corrupt=on_corrupt,
                        num_parallel_calls=num_parallel_calls, deterministic=deterministic,
                        with_filename=with_filename)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    ds = ds.with_options(options)
    return ds.prefetch((AUTOTUNE if training else 1) if prefetch is None else prefetch)


# ----------------------------------------------------------------------------------------------
# The steps of make_dataset: files -> records -> (seeded) parse, corrupt records handled
# ----------------------------------------------------------------------------------------------

def _shard_files(files, file_pattern, num_shards, shard_index):
    """This input pipeline's [(path, expected records)] of `files` (file-level sharding)."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} not in [0, {num_shards})")
    if len(files) < num_shards:
        raise ValueError(f"{len(files)} shard files for {num_shards} input pipelines: file-level "
                         f"sharding needs at least one file per pipeline ({file_pattern!r})")
    return files[shard_index::num_shards]


def _read_records(files, compression, *, on_corrupt, shuffle, shuffle_buffer, file_seed,
                  record_seed, repeat, deterministic):
    """(path, record index, serialized) of every record: files shuffled and repeated, read by a
    parallel interleave of TFRecord readers, records shuffled."""
    ds = tf.data.Dataset.from_tensor_slices(
        ([p for p, _ in files], np.array([n for _, n in files], np.int64)))
    if shuffle:
        ds = ds.shuffle(len(files), seed=file_seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    counts_known = all(n >= 0 for _, n in files)
    ds = ds.interleave(
        lambda p, n: _read_file(p, n, compression=compression, on_corrupt=on_corrupt,
                                counts_known=counts_known),
        cycle_length=min(len(files), 8), block_length=1, num_parallel_calls=AUTOTUNE,
        deterministic=deterministic)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=record_seed, reshuffle_each_iteration=True)
    return ds


def _with_seeds(ds, seed, **random_kwargs):
    """Append a random per-record seed pair (int64 (2,)) drawn from `seed`."""
    seeds = tf.data.Dataset.random(seed=seed, **random_kwargs).batch(2)
    return tf.data.Dataset.zip((ds, seeds)).map(lambda r, s: (*r, s))


def parse_train_record(path, index, serialized, seed, *, num_frames, crop_size, sampling,
                       sampling_rate, scale_range, inverse_uniform, random_flip,
                       image_key=fmt.IMAGE_KEY, label_key=fmt.LABEL_INDEX_KEY):
    """One training record -> (clip float32 (T, c, c, 3), label int32): decode only the sampled
    frames, random short-side scale, random crop, optional flip (`preprocess.train_clip`)."""
    rec = fmt.parse_sequence_example(serialized, image_key, label_key)
    clip = preprocess.train_clip(
        rec["frames"], num_frames=num_frames, crop_size=crop_size, sampling=sampling,
        sampling_rate=sampling_rate, scale_range=scale_range, inverse_uniform=inverse_uniform,
        flip=random_flip, seed=seed)
    return clip, _first_label(rec, path, index)


def parse_eval_record(path, index, serialized, seed, *, num_frames, crop_size, sampling,
                      sampling_rate, short_side, num_clips, num_crops, random_segments=False,
                      with_filename=False, hidden_files=(), image_key=fmt.IMAGE_KEY,
                      label_key=fmt.LABEL_INDEX_KEY):
    """One eval record -> (views float32 (V, T, c, c, 3), label int32): the multi-view test
    (`preprocess.eval_views`); `random_segments` draws each segment's frame from `seed`.
    `with_filename`: (views, (label or -1 when the record has none, video/filename)).
    `hidden_files`: shard paths of splits with hidden labels, whose records get -1."""
    rec = fmt.parse_sequence_example(serialized, image_key, label_key)
    views = preprocess.eval_views(
        rec["frames"], num_frames=num_frames, crop_size=crop_size, sampling=sampling,
        sampling_rate=sampling_rate, short_side=short_side, num_clips=num_clips,
        num_crops=num_crops, segment_seed=seed if random_segments else None)
    if with_filename:
        return views, (_label_or_unknown(rec), rec["filename"])
    if hidden_files:
        return views, _label_or_hidden(rec, path, index, hidden_files)
    return views, _first_label(rec, path, index)


def _parse_or_skip(ds, parse, out_shape, *, on_corrupt, num_parallel_calls, deterministic,
                   with_filename=False):
    """`parse` every (path, index, serialized, seed) in parallel; a record that fails to parse or
    decode is skipped and reported naming its file and index (skip) or raises naming them
    (fail). Elements: (x with static `out_shape`, label) (`with_filename`: parse gives
    (x, (label, filename)) and elements are (x, label, filename))."""
    def parse_one(path, index, serialized, seed):
        # Errors inside a one-element dataset become an ok=False element: no record can stop
        # the pipeline, and the bad one is reported with its file and index.
        good = tf.data.Dataset.from_tensors((path, index, serialized, seed)).map(
            lambda *a: (*parse(*a), tf.constant(True), a[0], a[1])).ignore_errors()
        no_label = (tf.constant(-1), tf.constant("")) if with_filename else tf.constant(-1)
        bad = tf.data.Dataset.from_tensors((tf.zeros([0] * len(out_shape)), no_label,
                                            tf.constant(False), path, index))
        return good.concatenate(bad).take(1)

    def keep(x, y, ok, path, index):
        if on_corrupt == "fail":
            check = tf.debugging.Assert(ok, [
                "corrupt record", index, "in", path, "(cannot parse/decode; run python -m "
                "vov3d_tf.data.validate on the shard directory for the reason)"])
            with tf.control_dependencies([check]):
                return tf.identity(ok)
        reported = tf.cond(ok, lambda: tf.constant(0, tf.int64), lambda: tf.numpy_function(
            _report_skip, [path, index, tf.constant(1, tf.int64)], tf.int64, stateful=True))
        with tf.control_dependencies([reported]):
            return tf.identity(ok)

    ds = ds.interleave(parse_one, cycle_length=_parallelism(num_parallel_calls), block_length=1,
                       num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    return ds.filter(keep).map(lambda x, y, ok, p, i: (tf.ensure_shape(x, out_shape),
                                                       *(y if with_filename else (y,))))


def check_labelled(file_pattern, split=None, purpose="training"):
    """A ValueError naming the file, split and manifest if any shard of `file_pattern` belongs
    to a split whose labels are hidden (they can be evaluated and predicted, not trained on)."""
    files, _, hidden = _resolve(file_pattern, split)
    _refuse_hidden(hidden, len(files), file_pattern, purpose)


def _refuse_hidden(hidden, num_files, file_pattern, purpose):
    if hidden:
        path, (name, manifest) = sorted(hidden.items())[0]
        raise ValueError(f"{path}: split {name!r} has hidden labels ({manifest}: "
                         f"\"hidden_labels\": true, a test split); {purpose} needs labelled "
                         f"shards ({len(hidden)} of the {num_files} files of {file_pattern!r} "
                         f"are unlabelled)")


def check_record_keys(path, compression, image_key, label_key, need_label=False):
    """The first record of `path` must hold `image_key` (feature list) and `label_key` (context):
    a ValueError naming the file and the keys it has otherwise (shards written by other tools
    use other keys: data.image_key / data.label_key). `need_label` (training): its label list
    must not be empty either (shards without a manifest whose labels are hidden). A record
    that does not parse is left to the pipeline's corrupt-record handling."""
    try:
        first = next(iter(tf.data.TFRecordDataset(path, compression_type=compression).take(1)),
                     None)
        if first is None:
            return
        example = tf.train.SequenceExample.FromString(first.numpy())
    except Exception:  # noqa: BLE001  (unreadable/corrupt: reported by the pipeline)
        return
    lists, context = example.feature_lists.feature_list, example.context.feature
    if image_key not in lists:
        raise ValueError(f"{path}: record 0 has no feature list {image_key!r} (it has "
                         f"{sorted(lists)}; set data.image_key / image_key= to the frames' key)")
    if label_key not in context:
        raise ValueError(f"{path}: record 0 has no context feature {label_key!r} (it has "
                         f"{sorted(context)}; set data.label_key / label_key= to the int64 "
                         f"class-index key)")
    if need_label and not context[label_key].int64_list.value:
        raise ValueError(f"{path}: record 0 has no label (empty {label_key!r}: hidden labels, "
                         f"a test split?); training needs labelled shards")


DENSE_REFERENCE_FPS = 30.0  # the paper's dense sampling (16 x stride 5) is defined at 30 fps
_frame_rate_warned = set()


def check_frame_rate(paths, sampling_rate, num_frames=16):
    """Dense sampling's stride means time only at a known frame rate: warn (once per set of
    folders) when the manifests beside `paths` record another stored rate than 30 fps, or none.
    Returns the stored rate (None when unknown)."""
    folders = tuple(sorted({fileio.dirname(fileio.abspath(p)) for p in paths}))
    rates = set()
    for folder in folders:
        if not fileio.exists(shards.manifest_path(folder)):
            rates.add(None)
            continue
        for entry in shards.read_manifest(folder)["splits"].values():
            rates.add(entry.get("frame_rate"))
    rate = rates.pop() if len(rates) == 1 else None
    if folders in _frame_rate_warned:
        return rate
    if rate is None:
        _frame_rate_warned.add(folders)
        print(f"vov3d_tf.data: WARNING: the stored frame rate of {list(folders)} is unknown (no "
              f"manifest, frame folders, or videos kept at different native rates); dense "
              f"sampling takes every {sampling_rate}th stored frame as it is, defined for "
              f"{DENSE_REFERENCE_FPS:g} fps (build with --fps 30 to fix the rate)",
              file=sys.stderr, flush=True)
    elif abs(rate - DENSE_REFERENCE_FPS) > 1e-3:
        _frame_rate_warned.add(folders)
        print(f"vov3d_tf.data: WARNING: shards in {list(folders)} are stored at {rate:g} fps; "
              f"dense sampling's stride {sampling_rate} is defined at {DENSE_REFERENCE_FPS:g} fps "
              f"(a window spans {num_frames * sampling_rate / rate:.2f} s instead of "
              f"{num_frames * sampling_rate / DENSE_REFERENCE_FPS:.2f} s for {num_frames} "
              f"frames)",
              file=sys.stderr, flush=True)
    return rate


def _parallelism(num_parallel_calls):
    if num_parallel_calls == AUTOTUNE:
        return max(os.cpu_count() or 1, 2)
    return int(num_parallel_calls)


def _label_or_unknown(rec):
    """The first label, or -1 for a record without one (hidden test labels)."""
    return tf.cond(tf.size(rec["labels"]) > 0, lambda: tf.cast(rec["labels"][0], tf.int32),
                   lambda: tf.constant(-1, tf.int32))


def _label_or_hidden(rec, path, index, hidden_files):
    """The first label; -1 for a label-less record of a file in `hidden_files`, which is
    corrupt in any other file."""
    hidden = tf.reduce_any(tf.equal(path, tf.constant(hidden_files)))
    check = tf.debugging.Assert(tf.logical_or(hidden, tf.size(rec["labels"]) > 0), [
        "record", index, "in", path, "has no", fmt.LABEL_INDEX_KEY])
    with tf.control_dependencies([check]):
        return _label_or_unknown(rec)


def _first_label(rec, path, index):
    check = tf.debugging.Assert(tf.size(rec["labels"]) > 0, ["record", index, "in", path,
                                                             "has no", fmt.LABEL_INDEX_KEY])
    with tf.control_dependencies([check]):
        return tf.cast(rec["labels"][0], tf.int32)
