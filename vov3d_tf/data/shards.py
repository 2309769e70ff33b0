"""Shard files and their manifest: atomic writing, sha256, and the manifest.json contract.

A shard directory holds `{split}-{i:05d}-of-{n:05d}.tfrecord[.gz]` files, `labels.txt` (one
class name per line, line number = class index) and `manifest.json`:

    {"format": "vov3d_tf.video_sequence_example/1",
     "feature_keys": {...},                         # the record keys (format.py)
     "labels": [class names, index order],
     "splits": {"train": {
         "compression": "" | "GZIP",
         "num_records": N, "num_skipped": K,
         "class_histogram": [records per class index] (null when the labels are hidden),
         "hidden_labels": true,     # only in a split whose labels are hidden (a test split):
                                    # its records carry empty label lists
         "frame_rate": stored frames per second (one value for all records) or null (unknown:
                       frame folders, or videos kept at different native rates),
         "frame_rates": {"25.0": records, ..., "unknown": records},
         "shards": [{"file": ..., "records": n, "sha256": ..., "skipped": k}],
         "skipped": [{"source": path, "reason": why, "shard": file}],
         "params": {build parameters}}, ...}}

Several splits may share one directory (and must share its labels).
"""
import json

import tensorflow as tf

from vov3d_tf import fileio
from vov3d_tf.data import format as fmt

FORMAT_VERSION = "vov3d_tf.video_sequence_example/1"
LABELS_NAME = "labels.txt"


def atomic_write_text(path, text):
    fileio.atomic_write_text(path, text)


class ShardWriter:
    """Writes serialized records to `path` under a temporary name; `close()` renames it.

    A crash leaves only `*.tmp-*` files, never a half shard under the final name (on an object
    store the rename is a copy + delete: see fileio).
    """

    def __init__(self, path, gzip=False):
        self.path = path
        self.tmp = fileio.temp_name(path)
        options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
        self._writer = tf.io.TFRecordWriter(self.tmp, options)
        self.records = 0

    def write(self, serialized):
        self._writer.write(serialized)
        self.records += 1

    def close(self):
        """Finishes the shard; returns its sha256."""
        self._writer.close()
        digest = fileio.sha256(self.tmp)  # read before the rename: one pass, same bytes
        fileio.rename(self.tmp, self.path, overwrite=True)
        return digest

    def abort(self):
        self._writer.close()
        if fileio.exists(self.tmp):
            fileio.remove(self.tmp)


def manifest_path(directory):
    return fileio.join(directory, fmt.MANIFEST_NAME)


def read_manifest(directory):
    """The manifest of a shard directory; a clear error if it is missing or unreadable."""
    path = manifest_path(directory)
    if not fileio.exists(path):
        raise FileNotFoundError(f"no {fmt.MANIFEST_NAME} in shard directory {directory!r}")
    try:
        manifest = fileio.read_json(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ValueError(f"cannot read manifest {path!r}: {e}") from e
    for key in ("labels", "splits"):
        if key not in manifest:
            raise ValueError(f"manifest {path!r} has no {key!r} key")
    return manifest


def load_labels(directory):
    """Class names of a shard directory, index order (from its manifest)."""
    return list(read_manifest(directory)["labels"])


def write_split(directory, split, entry, labels):
    """Adds/replaces `split` in the directory's manifest and writes labels.txt.

    Raises if the directory already holds splits built with different labels.
    """
    fileio.makedirs(directory)
    path = manifest_path(directory)
    if fileio.exists(path):
        manifest = read_manifest(directory)
        if list(manifest["labels"]) != list(labels):
            old = manifest["labels"]
            diff = next((i for i, (a, b) in enumerate(zip(old, labels)) if a != b),
                        min(len(old), len(labels)))
            raise ValueError(
                f"label mismatch in {path!r}: existing splits {sorted(manifest['splits'])} use "
                f"{len(old)} labels, split {split!r} has {len(labels)}; first difference at "
                f"index {diff}: {old[diff] if diff < len(old) else None!r} vs "
                f"{labels[diff] if diff < len(labels) else None!r}")
    else:
        manifest = {"format": FORMAT_VERSION,
                    "feature_keys": {"label_index": fmt.LABEL_INDEX_KEY,
                                     "label_text": fmt.LABEL_TEXT_KEY,
                                     "filename": fmt.FILENAME_KEY,
                                     "frames": fmt.IMAGE_KEY},
                    "labels": list(labels), "splits": {}}
    manifest["splits"][split] = entry
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    atomic_write_text(fileio.join(directory, LABELS_NAME), "".join(f"{l}\n" for l in labels))
    return manifest


def split_entry(shards, skipped, num_classes, compression, params, *, hidden_labels=False):
    """Builds a manifest split entry from per-shard results.

    shards: list of dicts {"file", "records", "sha256", "skipped", "class_counts",
    "frame_rates" (stored frame rate -> records, optional)}. `hidden_labels`: the split's
    labels are hidden: no class histogram, `"hidden_labels": true` (labelled splits have no
    such key, so their manifests are what they always were).
    """
    histogram, rates = [0] * num_classes, {}
    for s in shards:
        for i, c in enumerate(s.pop("class_counts")):
            histogram[i] += c
        for rate, n in s.pop("frame_rates", {"unknown": s["records"]}).items():
            rates[rate] = rates.get(rate, 0) + n
    known = [r for r, n in rates.items() if n and r != "unknown"]
    single = float(known[0]) if len(known) == 1 and not rates.get("unknown") else None
    entry = {"compression": compression,
             "num_records": sum(s["records"] for s in shards),
             "num_skipped": len(skipped),
             "class_histogram": None if hidden_labels else histogram,
             "frame_rate": single,
             "frame_rates": dict(sorted(rates.items())),
             "shards": shards,
             "skipped": skipped,
             "params": params}
    if hidden_labels:
        entry["hidden_labels"] = True
    return entry


def split_files(directory, split):
    """Full paths of a split's shards, listed by the manifest; errors name what is missing."""
    manifest = read_manifest(directory)
    if split not in manifest["splits"]:
        raise KeyError(f"split {split!r} not in {manifest_path(directory)!r} "
                       f"(has {sorted(manifest['splits'])})")
    paths = [fileio.join(directory, s["file"]) for s in manifest["splits"][split]["shards"]]
    missing = [p for p in paths if not fileio.exists(p)]
    if missing:
        raise FileNotFoundError(f"shards listed in {manifest_path(directory)!r} are missing: "
                                f"{missing}")
    return paths


def _folders(pattern):
    """The folders of the files a pattern matches, sorted."""
    return sorted({fileio.dirname(fileio.abspath(f)) for f in fileio.glob(pattern)})


def manifest_labels(patterns):
    """Class names from the first manifest beside the files of `patterns` (in order), or None."""
    for pattern in patterns:
        for folder in _folders(pattern):
            if fileio.exists(manifest_path(folder)):
                return load_labels(folder)
    return None
