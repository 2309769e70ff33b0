"""The labels file: one class name per line, line number = class index (0-based).

Every place that reads class names from a file (training's class names, `--labels` of predict
and export, the shard builder's `--labels`, `vov3d_tf.data.load_labels`) goes through
`read_labels`, so a file means the same classes everywhere:

    UTF-8 (a byte-order mark is dropped); lines end in \\n, \\r\\n or \\r;
    a name is the line without its surrounding whitespace;
    a blank line before the last name, or a name seen twice, is an error naming the line
    (either would shift or merge class indices); blank lines after the last name are ignored.
"""
import tensorflow as tf

__all__ = ["read_labels", "parse_labels"]


def parse_labels(text, source="labels"):
    """Class names from the text of a labels file; errors name `source` and the line."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f"labels file {source!r} is empty")
    first_seen = {}
    for number, name in enumerate(names, start=1):
        if not name:
            raise ValueError(f"labels file {source!r}: line {number} is blank; expected one "
                             f"class name per line (the line number is the class index)")
        if name in first_seen:
            raise ValueError(f"labels file {source!r}: line {number}: class {name!r} appears "
                             f"twice (first at line {first_seen[name]})")
        first_seen[name] = number
    return names


def read_labels(path):
    """Class names (index order) of the labels file at `path` (a local or tf.io.gfile path)."""
    path = str(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"labels file {path!r} not found")
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"labels file {path!r} is not UTF-8 text: byte {e.start}: "
                         f"{e.reason}") from None
    return parse_labels(text, path)
