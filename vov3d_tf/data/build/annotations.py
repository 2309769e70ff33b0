"""Annotation parsers: a CSV `path,label`, Something-Something v1/v2 and Kinetics-400 files.

Each parser returns (items, labels): `labels` is the class-name list (index order) and each
`Item` names one video (or frame folder) with its label. A label that is not in the label list is
an annotation error: the parser raises naming the file, line and label (up to 10 of them).
Missing videos are not errors here: the builder skips them and lists them in the manifest.

Hidden labels (a test split whose labels are not published): every item has label
`HIDDEN_LABEL` (-1) and no label text; the class list still comes from the dataset's labels file
(the classes the model predicts). A split is all labelled or all hidden: an annotation file
that mixes labelled and label-less entries is an error naming them.

Official formats:
  * Something-Something v2: `labels.json` {template without brackets: "index"}, `train.json` /
    `validation.json` lists of {"id", "label", "template": "Putting [something] on [something]",
    "placeholders"}; the class of a video is its template with the brackets removed; videos
    `{id}.webm` in `20bn-something-something-v2/` (or `--videos-root`). `test.json` (split
    `test`) lists only {"id": "..."}: its labels are hidden.
  * Something-Something v1: `something-something-v1-labels.csv` (one class per line, line order =
    index), `something-something-v1-{train,validation}.csv` lines `id;class`; frames
    `{id}/00001.jpg...` in `20bn-something-something-v1/` (or `--frames-root`).
    `something-something-v1-test.csv` (split `test`) has lines `id` only: hidden labels.
  * CSV: header `path,label`; a CSV without a `label` column, or whose label column is empty
    on every row, is a split with hidden labels (the class list then comes from `--labels`).
  * Kinetics-400: `train.csv` / `validate.csv` with header `label,youtube_id,time_start,time_end,
    split` (an extra `is_cc` column is ignored). Videos are looked up under `--videos-root`
    (any sub-folder) by the ActivityNet crawler's name `{youtube_id}_{start:06d}_{end:06d}.mp4`
    (already cut to the clip: all frames kept) or else `{youtube_id}.{ext}` (a full video: only
    [time_start, time_end) is stored). Classes: `--labels` file, else the sorted class names.
    A `test.csv` without a `label` column (or an empty one) has hidden labels (`--labels` needed).
"""
import csv
import dataclasses
import io
import os
from typing import Optional

from vov3d_tf import fileio
from vov3d_tf.data.video_io import VIDEO_EXTENSIONS

SPLIT_FILES = {"train": "train", "training": "train", "validation": "validation",
               "val": "validation", "valid": "validation", "validate": "validation",
               "eval": "validation", "test": "test"}
MAX_REPORTED = 10
HIDDEN_LABEL = -1  # Item.label of a video whose label is not published (a test split)


@dataclasses.dataclass(frozen=True)
class Item:
    source: str                      # video file or frame folder
    label: int
    label_text: str
    name: str                        # stored as video/filename
    kind: str = "video"              # "video" | "frames"
    start: Optional[float] = None    # seconds, for clips cut from a full video
    end: Optional[float] = None


class AnnotationError(ValueError):
    pass


def labels_hidden(items):
    """True if `items` form a split with hidden labels (every label is HIDDEN_LABEL)."""
    return bool(items) and all(i.label == HIDDEN_LABEL for i in items)


def _hidden_or_labelled(source, has_label):
    """True (hidden split) if no entry of `has_label` [(where, bool)] has a label, False if all
    do; raises naming the label-less entries of a mixed file."""
    missing = [where for where, has in has_label if not has]
    if not missing or len(missing) == len(has_label):
        return bool(missing)
    shown = "; ".join(str(w) for w in missing[:MAX_REPORTED])
    more = f" (and {len(missing) - MAX_REPORTED} more)" if len(missing) > MAX_REPORTED else ""
    raise AnnotationError(f"{source}: {len(missing)} of {len(has_label)} entries have no label "
                          f"({shown}{more}); a split is either all labelled or all hidden (a "
                          f"test split)")


def _only_test_hidden(source, split, hidden):
    """Something-Something publishes labels for every split but `test`: a label-less train or
    validation file is a broken file, not a hidden split."""
    if hidden and _split_file(split) != "test":
        raise AnnotationError(f"{source}: no entry has a label, but split {split!r} is a "
                              f"labelled split (only the test split's labels are hidden)")
    return hidden


def _hidden_needs_labels(source, labels):
    if labels is None:
        raise AnnotationError(f"{source}: the labels are hidden (no label column / all empty): "
                              f"pass --labels FILE, the classes the model predicts (e.g. the "
                              f"labels.txt of the training shards)")


def read_labels_file(path):
    """`vov3d_tf.data.labels.read_labels`, its format errors as `AnnotationError`."""
    from vov3d_tf.data.labels import read_labels
    try:
        return read_labels(path)
    except FileNotFoundError:
        raise
    except ValueError as e:
        raise AnnotationError(str(e)) from None


def _index(labels, rows, source):
    """label text -> index for (line, text) rows; raises listing unknown labels."""
    lookup = {name: i for i, name in enumerate(labels)}
    bad = [(line, text) for line, text in rows if text not in lookup]
    if bad:
        shown = "; ".join(f"line {line}: {text!r}" for line, text in bad[:MAX_REPORTED])
        more = f" (and {len(bad) - MAX_REPORTED} more)" if len(bad) > MAX_REPORTED else ""
        raise AnnotationError(f"{source}: {len(bad)} label(s) not in the {len(labels)} classes: "
                              f"{shown}{more}")
    return [lookup[text] for _, text in rows]


def _split_file(split):
    if split not in SPLIT_FILES:
        raise AnnotationError(f"split {split!r} has no annotation file; use one of "
                              f"{sorted(SPLIT_FILES)}")
    return SPLIT_FILES[split]


def parse_csv(csv_path, *, labels=None, frames_root=None):
    """CSV with header `path,label`; relative paths resolve against the CSV's folder, or against
    `frames_root` when given (then each path is a folder of frames). No `label` column, or an
    empty one on every row: hidden labels (`labels`, the class list, is then required)."""
    base = frames_root if frames_root is not None else fileio.dirname(fileio.abspath(csv_path))
    with io.StringIO(fileio.read_text(csv_path), newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise AnnotationError(f"{csv_path}: expected a header with columns path,label (or "
                                  f"path alone for hidden labels), got {reader.fieldnames}")
        rows = [(reader.line_num, r["path"], (r.get("label") or "").strip()) for r in reader]
    if not rows:
        raise AnnotationError(f"{csv_path}: no rows")
    kind = "frames" if frames_root is not None else "video"
    if _hidden_or_labelled(csv_path, [(f"line {line}", bool(text)) for line, _, text in rows]):
        _hidden_needs_labels(csv_path, labels)
        return [Item(source=fileio.join(base, path), label=HIDDEN_LABEL, label_text="",
                     name=path, kind=kind) for _, path, _ in rows], labels
    labels = sorted({r[2] for r in rows}) if labels is None else labels
    indices = _index(labels, [(line, text) for line, _, text in rows], csv_path)
    items = [Item(source=fileio.join(base, path), label=i, label_text=labels[i], name=path,
                  kind=kind) for (_, path, _), i in zip(rows, indices)]
    return items, labels


def strip_template(template):
    """'Putting [something] onto [something]' -> 'Putting something onto something'."""
    return template.replace("[", "").replace("]", "")


def parse_ssv2(ssv2_dir, split, *, videos_root=None):
    """Something-Something v2 annotation JSONs (see the module docstring)."""
    labels_path = fileio.join(ssv2_dir, "labels.json")
    mapping = fileio.read_json(labels_path)
    try:
        order = sorted((int(v), k) for k, v in mapping.items())
    except (AttributeError, ValueError) as e:
        raise AnnotationError(f"{labels_path}: expected {{class: \"index\"}}, {e}") from None
    if [i for i, _ in order] != list(range(len(order))):
        raise AnnotationError(f"{labels_path}: indices are not 0..{len(order) - 1}")
    labels = [k for _, k in order]
    ann_path = fileio.join(ssv2_dir, f"{_split_file(split)}.json")
    entries = fileio.read_json(ann_path)
    if not isinstance(entries, list) or not entries:
        raise AnnotationError(f"{ann_path}: expected a non-empty list of {{\"id\": ...}} entries")
    for n, e in enumerate(entries):
        if not isinstance(e, dict) or "id" not in e:
            raise AnnotationError(f"{ann_path}: entry {n} has no 'id': {e!r}")
    root = videos_root or _first_dir(ssv2_dir, "20bn-something-something-v2")
    hidden = _hidden_or_labelled(ann_path, [(f"entry {n} (id {e['id']})", "template" in e)
                                            for n, e in enumerate(entries)])
    if _only_test_hidden(ann_path, split, hidden):  # test.json: [{"id": ...}]
        return [Item(source=fileio.join(root, f"{e['id']}.webm"), label=HIDDEN_LABEL,
                     label_text="", name=f"{e['id']}.webm") for e in entries], labels
    rows = [(f"entry {n} (id {e['id']})", strip_template(e["template"]))
            for n, e in enumerate(entries)]
    indices = _index(labels, rows, ann_path)
    items = [Item(source=fileio.join(root, f"{e['id']}.webm"), label=i, label_text=labels[i],
                  name=f"{e['id']}.webm") for e, i in zip(entries, indices)]
    return items, labels


def parse_ssv1(ssv1_dir, split, *, frames_root=None):
    """Something-Something v1 `;`-separated CSVs (see the module docstring)."""
    labels_path = fileio.join(ssv1_dir, "something-something-v1-labels.csv")
    labels = read_labels_file(labels_path)
    ann_path = fileio.join(ssv1_dir, f"something-something-v1-{_split_file(split)}.csv")
    ids, rows, has_label = [], [], []
    with io.StringIO(fileio.read_text(ann_path)) as f:
        for line_num, line in enumerate(f, 1):
            if not line.strip():
                continue
            video_id, sep, text = line.rstrip("\r\n").partition(";")
            if not video_id.strip():
                raise AnnotationError(f"{ann_path}: line {line_num}: no video id in "
                                      f"{line.strip()!r}")
            ids.append(video_id.strip())
            rows.append((line_num, text.strip()))
            has_label.append((f"line {line_num}", bool(sep)))
    if not ids:
        raise AnnotationError(f"{ann_path}: no rows")
    root = frames_root or _first_dir(ssv1_dir, "20bn-something-something-v1")
    hidden = _hidden_or_labelled(ann_path, has_label)
    if _only_test_hidden(ann_path, split, hidden):  # something-something-v1-test.csv: ids only
        return [Item(source=fileio.join(root, v), label=HIDDEN_LABEL, label_text="", name=v,
                     kind="frames") for v in ids], labels
    indices = _index(labels, rows, ann_path)
    items = [Item(source=fileio.join(root, v), label=i, label_text=labels[i], name=v,
                  kind="frames") for v, i in zip(ids, indices)]
    return items, labels


def kinetics_clip_name(youtube_id, start, end):
    """The ActivityNet crawler's file stem of a cut clip: `{id}_{start:06d}_{end:06d}`."""
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


def index_videos(videos_root):
    """{file stem: path} of every video under videos_root (first in sorted walk order wins)."""
    found = {}
    for dirpath, dirnames, filenames in fileio.walk(videos_root):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, fileio.join(dirpath, name))
    return found


def parse_k400(csv_path, videos_root, *, labels=None):
    """Kinetics-400 `train.csv` / `validate.csv` (see the module docstring); a `test.csv`
    without labels (no or an empty `label` column) is a split with hidden labels (`labels`
    required)."""
    with io.StringIO(fileio.read_text(csv_path), newline="") as f:
        reader = csv.DictReader(f)
        need = {"youtube_id", "time_start", "time_end"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise AnnotationError(f"{csv_path}: expected columns {sorted(need | {'label'})}, got "
                                  f"{reader.fieldnames}")
        rows = []
        for r in reader:
            try:
                start, end = float(r["time_start"]), float(r["time_end"])
            except ValueError:
                raise AnnotationError(f"{csv_path}: line {reader.line_num}: bad time range "
                                      f"{r['time_start']!r}, {r['time_end']!r}") from None
            rows.append((reader.line_num, (r.get("label") or "").strip(), r["youtube_id"].strip(),
                         start, end))
    if not rows:
        raise AnnotationError(f"{csv_path}: no rows")
    if _hidden_or_labelled(csv_path, [(f"line {r[0]}", bool(r[1])) for r in rows]):
        _hidden_needs_labels(csv_path, labels)
        indices = [HIDDEN_LABEL] * len(rows)
    else:
        labels = sorted({r[1] for r in rows}) if labels is None else labels
        indices = _index(labels, [(line, text) for line, text, *_ in rows], csv_path)
    videos = index_videos(videos_root)
    items = []
    for (_, _, yid, start, end), i in zip(rows, indices):
        clip = kinetics_clip_name(yid, start, end)
        text = labels[i] if i != HIDDEN_LABEL else ""
        if clip in videos:  # already cut to [start, end]
            items.append(Item(source=videos[clip], label=i, label_text=text, name=clip))
        elif yid in videos:  # the full video: keep only the clip's range
            items.append(Item(source=videos[yid], label=i, label_text=text, name=clip,
                              start=start, end=end))
        else:  # reported as missing by the builder
            items.append(Item(source=fileio.join(videos_root, clip + ".mp4"), label=i,
                              label_text=text, name=clip))
    return items, labels


def _first_dir(base, sub):
    candidate = fileio.join(base, sub)
    return candidate if fileio.isdir(candidate) else base
