"""Check a shard directory against its manifest: `vov3d-validate DIR [--full]`.

Re-reads every record of every split and checks: the shard exists, its sha256 and record count
match the manifest, every record parses, has a label index inside the label list whose text
matches it (in a split whose labels are hidden, manifest `hidden_labels`: no label at all), and
at least one frame; all frames of a record are JPEGs of one size (headers only; `--full`
decodes every frame); per-split class histograms match (labelled splits). Prints one line per
problem, naming the shard and record, and exits 1 if there is any (0 and a JSON summary otherwise).
"""
import argparse
import io
import json
import re
import sys

from vov3d_tf import fileio, runtime
from vov3d_tf.data import format as fmt
from vov3d_tf.data import shards


def check_record(serialized, labels, *, full=False, hidden_labels=False):
    """Problems (list of str) of one serialized record; empty if it is fine. `hidden_labels`:
    the record belongs to a split whose labels are hidden and must carry none."""
    from PIL import Image
    try:
        frames, indices, texts, _ = fmt.read_sequence_example(serialized)
    except Exception as e:  # noqa: BLE001  (protobuf raises DecodeError and others)
        return [f"not a SequenceExample ({type(e).__name__}: {e})"]
    problems = []
    if hidden_labels:
        if indices or texts:
            problems.append(f"label {indices} {texts} in a split whose labels are hidden "
                            f"(manifest hidden_labels)")
        indices = []
    elif not indices:
        problems.append(f"no {fmt.LABEL_INDEX_KEY}")
    for j, index in enumerate(indices):
        if not 0 <= index < len(labels):
            problems.append(f"label index {index} outside the {len(labels)} classes")
        elif j < len(texts) and texts[j] != labels[index]:
            problems.append(f"label text {texts[j]!r} != manifest class {index} {labels[index]!r}")
    if not frames:
        problems.append(f"no frames in {fmt.IMAGE_KEY}")
    size = None
    for k, jpeg in enumerate(frames):
        try:
            image = Image.open(io.BytesIO(jpeg))
            if image.format != "JPEG":
                raise ValueError(f"format {image.format}")
            if full:
                image.load()
        except Exception as e:  # noqa: BLE001
            problems.append(f"frame {k} is not a valid JPEG ({type(e).__name__}: {e})")
            break
        if size is None:
            size = image.size
        elif image.size != size:
            problems.append(f"frame {k} is {image.size[0]}x{image.size[1]}, frame 0 is "
                            f"{size[0]}x{size[1]}")
            break
    return problems


def _first_label(serialized):
    try:
        indices = fmt.read_sequence_example(serialized)[1]
    except Exception:  # noqa: BLE001  (reported by check_record)
        return None
    return indices[0] if indices else None


def validate(directory, *, full=False, log=print):
    """Logs each problem; returns (number of problems, summary dict)."""
    import tensorflow as tf
    try:
        manifest = shards.read_manifest(directory)
    except (FileNotFoundError, ValueError) as e:
        log(f"BAD {e}")
        return 1, {}
    labels = manifest["labels"]
    problems, summary = 0, {}
    for split, entry in sorted(manifest["splits"].items()):
        hidden = bool(entry.get("hidden_labels"))
        histogram = [0] * len(labels)
        total = 0
        for shard in entry["shards"]:
            path = fileio.join(directory, shard["file"])
            if not fileio.exists(path):
                log(f"BAD {path}: missing (listed in the manifest)")
                problems += 1
                continue
            digest = fileio.sha256(path)
            if digest != shard["sha256"]:
                log(f"BAD {path}: sha256 {digest} != manifest {shard['sha256']}")
                problems += 1
            count = 0
            records = tf.data.TFRecordDataset(path, compression_type=entry.get("compression", ""))
            try:
                for serialized in records:
                    record_problems = check_record(serialized.numpy(), labels, full=full,
                                                   hidden_labels=hidden)
                    for p in record_problems:
                        log(f"BAD {path}: record {count}: {p}")
                    problems += len(record_problems)
                    label = _first_label(serialized.numpy())
                    if label is not None and 0 <= label < len(labels):
                        histogram[label] += 1
                    count += 1
            except tf.errors.OpError as e:
                log(f"BAD {path}: unreadable after record {count - 1} (truncated or corrupt: "
                    f"{_tf_message(e)})")
                problems += 1
            except Exception as e:  # noqa: BLE001  (a broken record must not stop the scan)
                log(f"BAD {path}: record {count}: {type(e).__name__}: {e}")
                problems += 1
            if count != shard["records"]:
                log(f"BAD {path}: {count} records read, manifest says {shard['records']}")
                problems += 1
            total += count
        if hidden and entry.get("class_histogram") is not None:
            log(f"BAD split {split!r}: a class histogram in a split whose labels are hidden")
            problems += 1
        elif not hidden and histogram != entry.get("class_histogram", histogram):
            log(f"BAD split {split!r}: class histogram of the records differs from the manifest's")
            problems += 1
        summary[split] = {"records": total, "shards": len(entry["shards"]),
                          "skipped_at_build": entry.get("num_skipped", 0)}
        if hidden:
            summary[split]["hidden_labels"] = True
    return problems, summary


def _tf_message(error):
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", error.message).splitlines()[0]
    return re.sub(r"\s*\[Op:\w+\].*", "", text)[:200]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vov3d-validate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--full", action="store_true", help="decode every JPEG frame")
    args = parser.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    problems, summary = validate(args.directory, full=args.full)
    if problems:
        print(f"{args.directory}: {problems} problem(s)", file=sys.stderr)
        return 1
    print(json.dumps({"directory": args.directory, "ok": True, "splits": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
