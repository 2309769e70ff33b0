"""Reading shards: batches of normalized training clips or test views, with the paper's sampling.

    train_dataset(files, TrainClip(...), batch_size=B, read=ReadOptions(...), seed=...)
    eval_dataset(files, EvalViews(...), batch_size=B, read=ReadOptions(...), with_filename=...)

Both run one reader (as Model Garden's video_input.py separates its decoder from its parser):

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

Hidden labels (a test split, manifest `hidden_labels`: the builder writes its records with empty
label lists): at eval their label is -1; training on such shards is refused, naming the file and
split (`check_labelled`).

Also here: `resolve_files` (a pattern's files, record counts and compression), `count_records`,
`shuffle_frames` (the "learns time" control), the corrupt-record counters.
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
from vov3d_tf.data.specs import EvalViews, ReadOptions, TrainClip

AUTOTUNE = tf.data.AUTOTUNE

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
              f"(`vov3d-validate` names the reason)", file=sys.stderr, flush=True)
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
    the builder), from the same manifest reads."""
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


def train_dataset(file_pattern, clip=TrainClip(), *, batch_size, read=ReadOptions(), split=None,
                  seed=None, shuffle=True, repeat=True, drop_remainder=True, input_context=None,
                  num_shards=1, shard_index=0):
    """Training batches `(clips float32 (B, T, c, c, 3), labels int32 (B,))` of `clip` (a
    `TrainClip`): only the sampled frames are decoded (only the crop's window of each), with
    random short-side scale, crop and flip.

    `file_pattern`: a glob of shard files, a list of paths, or a shard directory (with
    `split`). `batch_size`: videos per batch of this dataset (per replica with
    `input_context`). `seed`: shuffling and augmentation reproducible (and the element order
    deterministic). `shuffle`: files and records (`read.shuffle_buffer` records). `repeat`:
    forever (step-based training). `num_shards` / `shard_index`: file-level sharding (this
    pipeline reads files[shard_index::num_shards]); `input_context` (tf.distribute) overrides
    both. A split whose labels are hidden is refused, naming the file.
    """
    _check_batch(batch_size, num_shards)
    files, compression, _, seeds = _reader_setup(
        file_pattern, split, read, seed, input_context, num_shards, shard_index, training=True)
    if seed is None:
        seeds = (None, None, None)  # random file order, record order and augmentation
    if clip.sampling == "dense":
        check_frame_rate([p for p, _ in files], clip.sampling_rate, clip.num_frames)
    deterministic = seed is not None if read.deterministic is None else read.deterministic
    ds = _read_records(files, compression, on_corrupt=read.on_corrupt, shuffle=shuffle,
                       shuffle_buffer=read.shuffle_buffer, file_seed=seeds[0],
                       record_seed=seeds[1], repeat=repeat, deterministic=deterministic)
    ds = _with_seeds(ds, seeds[2], rerandomize_each_iteration=True)
    parse = functools.partial(parse_train_record, clip=clip, image_key=read.image_key,
                              label_key=read.label_key)
    ds = _parse_or_skip(ds, parse, [clip.num_frames, clip.crop_size, clip.crop_size, 3],
                        on_corrupt=read.on_corrupt, num_parallel_calls=read.num_parallel_calls,
                        deterministic=deterministic)
    return _batched(ds, batch_size, drop_remainder, deterministic,
                    AUTOTUNE if read.prefetch is None else read.prefetch)


def eval_dataset(file_pattern, views=EvalViews(), *, batch_size, read=ReadOptions(), split=None,
                 with_filename=False, random_segments=False, seed=None, drop_remainder=False,
                 input_context=None, num_shards=1, shard_index=0):
    """Test batches `(views float32 (B, V, T, c, c, 3), labels int32 (B,))` of `views` (an
    `EvalViews`; V = num_clips x num_crops, clip-major; sum the softmaxes of a video's views),
    in file order.

    `with_filename`: elements `(views, labels, filenames)`, each video's `video/filename`; a
    record without a label then gets -1 (hidden test labels) instead of counting as corrupt.
    Without it, records of a split whose manifest says `hidden_labels` get -1 too, and a
    label-less record of a labelled split counts as corrupt. `random_segments`: segment sampling
    draws a random frame per segment for each clip (the reference implementation's protocol;
    reproducible, from `seed` or 0) instead of the fixed positions (k + 0.5) / num_clips.
    The other arguments are `train_dataset`'s.
    """
    _check_batch(batch_size, num_shards)
    files, compression, hidden, seeds = _reader_setup(
        file_pattern, split, read, seed, input_context, num_shards, shard_index, training=False)
    hidden_files = tuple(sorted(p for p, _ in files if p in hidden))
    if views.sampling == "dense":
        check_frame_rate([p for p, _ in files], views.sampling_rate, views.num_frames)
    deterministic = True if read.deterministic is None else read.deterministic
    ds = _read_records(files, compression, on_corrupt=read.on_corrupt, shuffle=False,
                       shuffle_buffer=read.shuffle_buffer, file_seed=None, record_seed=None,
                       repeat=False, deterministic=deterministic)
    if random_segments:  # reproducible, from `seed` (or 0)
        ds = _with_seeds(ds, seeds[2])
    else:
        ds = ds.map(lambda p, i, s: (p, i, s, tf.zeros([2], tf.int64)))
    parse = functools.partial(parse_eval_record, views=views, random_segments=random_segments,
                              with_filename=with_filename, hidden_files=hidden_files,
                              image_key=read.image_key, label_key=read.label_key)
    ds = _parse_or_skip(ds, parse, [views.num_views, *views.view_shape],
                        on_corrupt=read.on_corrupt, num_parallel_calls=read.num_parallel_calls,
                        deterministic=deterministic, with_filename=with_filename)
    return _batched(ds, batch_size, drop_remainder, deterministic,
                    1 if read.prefetch is None else read.prefetch)


def _check_batch(batch_size, num_shards):
    for name, value in (("batch_size", batch_size), ("num_shards", num_shards)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _reader_setup(file_pattern, split, read, seed, input_context, num_shards, shard_index, *,
                  training):
    """The one reader's setup: this pipeline's files, the compression, the hidden-label files
    (refused in training, naming the file) and the (file, record, augmentation) seeds drawn
    from `seed` or 0; the record keys checked on the first record."""
    if input_context is not None:
        num_shards, shard_index = input_context.num_input_pipelines, input_context.input_pipeline_id
    # One seed per random step (file order, record order, augmentation), all from `seed`.
    seeds = [int(x) for x in np.random.SeedSequence(0 if seed is None else seed).generate_state(3)]
    all_files, compression, hidden = _resolve(file_pattern, split)
    if training:
        _refuse_hidden(hidden, len(all_files), file_pattern, "training")
    files = _shard_files(all_files, file_pattern, num_shards, shard_index)
    check_record_keys(files[0][0], compression, read.image_key, read.label_key,
                      need_label=training)
    return files, compression, hidden, seeds


def _batched(ds, batch_size, drop_remainder, deterministic, prefetch):
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options).prefetch(prefetch)


# ----------------------------------------------------------------------------------------------
# The steps: files -> records -> (seeded) parse, corrupt records handled
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


def parse_train_record(path, index, serialized, seed, *, clip, image_key=fmt.IMAGE_KEY,
                       label_key=fmt.LABEL_INDEX_KEY):
    """One training record -> (clip float32 (T, c, c, 3), label int32): decode only the sampled
    frames, random short-side scale, random crop, optional flip (`preprocess.train_clip`)."""
    rec = fmt.parse_sequence_example(serialized, image_key, label_key)
    return (preprocess.train_clip(rec["frames"], clip, seed=seed),
            _first_label(rec, path, index))


def parse_eval_record(path, index, serialized, seed, *, views, random_segments=False,
                      with_filename=False, hidden_files=(), image_key=fmt.IMAGE_KEY,
                      label_key=fmt.LABEL_INDEX_KEY):
    """One eval record -> (views float32 (V, T, c, c, 3), label int32): the multi-view test
    (`preprocess.eval_views`); `random_segments` draws each segment's frame from `seed`.
    `with_filename`: (views, (label or -1 when the record has none, video/filename)).
    `hidden_files`: shard paths of splits with hidden labels, whose records get -1."""
    rec = fmt.parse_sequence_example(serialized, image_key, label_key)
    x = preprocess.eval_views(rec["frames"], views,
                              segment_seed=seed if random_segments else None)
    if with_filename:
        return x, (_label_or_unknown(rec), rec["filename"])
    if hidden_files:
        return x, _label_or_hidden(rec, path, index, hidden_files)
    return x, _first_label(rec, path, index)


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
                "corrupt record", index, "in", path, "(cannot parse/decode; run vov3d-validate "
                "on the shard directory for the reason)"])
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
              f"{fmt.DENSE_FPS:g} fps (build with --fps 30 to fix the rate)",
              file=sys.stderr, flush=True)
    elif abs(rate - fmt.DENSE_FPS) > 1e-3:
        _frame_rate_warned.add(folders)
        print(f"vov3d_tf.data: WARNING: shards in {list(folders)} are stored at {rate:g} fps; "
              f"dense sampling's stride {sampling_rate} is defined at {fmt.DENSE_FPS:g} fps "
              f"(a window spans {num_frames * sampling_rate / rate:.2f} s instead of "
              f"{num_frames * sampling_rate / fmt.DENSE_FPS:.2f} s for {num_frames} "
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


def count_records(pattern):
    """Records matched by a shard pattern: manifest counts, else read through the files."""
    if not fileio.glob(pattern):
        return 0
    files, compression = resolve_files(pattern)
    return sum(expected if expected >= 0 else
               sum(1 for _ in tf.data.TFRecordDataset(path, compression))
               for path, expected in files)


def shuffle_frames(ds, seed, time_axis):
    """Permute the frames of every clip (train, `time_axis` 1) or of every video's views (eval,
    `time_axis` 2) at random."""
    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def shuffle(xy, s):
        x, *rest = xy  # rest: labels (and filenames)
        keys = tf.random.stateless_uniform(tf.stack([tf.shape(x)[0], tf.shape(x)[time_axis]]),
                                           seed=s)
        return (tf.gather(x, tf.argsort(keys, axis=1), axis=time_axis, batch_dims=1), *rest)
    return tf.data.Dataset.zip((ds, seeds)).map(shuffle)
