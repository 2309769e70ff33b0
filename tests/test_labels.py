"""The one labels-file reader: line endings, blank lines, duplicates, encoding, and every
command that reads labels going through it."""
import pytest
import tensorflow as tf

from vov3d_tf.data.labels import parse_labels, read_labels


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_any_line_ending_gives_the_same_names(tmp_path, ending):
    path = tmp_path / "labels.txt"
    path.write_bytes(ending.join(["a", "b c", " d "]).encode() + ending.encode() * 2)
    assert read_labels(path) == ["a", "b c", "d"]


def test_utf8_with_and_without_bom(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffcafé\nnaïve\n".encode("utf-8"))
    assert read_labels(path) == ["café", "naïve"]
    path.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(ValueError, match="labels.txt' is not UTF-8"):
        read_labels(path)


@pytest.mark.parametrize("text, message", [
    ("a\n\nb\n", "line 2 is blank"),
    ("a\n  \nb\n", "line 2 is blank"),
    ("a\r\nb\r\na\r\n", "line 3: class 'a' appears twice \\(first at line 1\\)"),
    ("", "is empty"),
    ("\n\n", "is empty"),
])
def test_format_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text, newline="")
    with pytest.raises(ValueError, match=message) as e:
        read_labels(path)
    assert "bad.txt" in str(e.value)


def test_missing_file_and_gfile_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_labels(tmp_path / "nope.txt")
    with tf.io.gfile.GFile("ram://labels/l.txt", "w") as f:
        f.write("x\r\ny\r\n")
    assert read_labels("ram://labels/l.txt") == ["x", "y"]
    assert parse_labels("p\nq", "inline") == ["p", "q"]


def test_every_reader_agrees(tmp_path):
    """Training's class names, data.load_labels and the shard builder (export and predict call
    read_labels itself)."""
    from vov3d_tf import adapters
    from vov3d_tf.config import config_from_dict
    from vov3d_tf.data import load_labels
    from vov3d_tf.data.build import annotations

    path = tmp_path / "labels.txt"
    path.write_bytes(b"walk\r\nrun\r\n")
    cfg = config_from_dict({"data": {"labels_file": str(path)}})
    readers = [adapters.class_names(cfg), read_labels(str(path)),
               load_labels(str(path)), annotations.read_labels_file(str(path))]
    assert all(names == ["walk", "run"] for names in readers)
    path.write_bytes(b"walk\nrun\nwalk\n")
    with pytest.raises(annotations.AnnotationError, match="line 3"):
        annotations.read_labels_file(str(path))
    with pytest.raises(ValueError, match="line 3"):
        adapters.class_names(cfg)
