"""Client helper for the exported SavedModel: send the model's sampled frames, never whole videos.

The served graph samples the model's T frames per video (segment centres or dense windows, as
evaluation does). A client can do that sampling itself and send only those frames, at the test
short side: a request then carries T small JPEGs instead of a whole video, and with an export
made with `vov3d-export --client-sampling` every request has the same shape (batch, num_clips x T),
which is what TF Serving's request batching concatenates.

    from vov3d_tf.deploy import serving_client
    spec = serving_client.read_spec("models/vov3d_m/1")        # or serving.ServingSpec(...)
    frames = serving_client.sample_frames("video.mp4", spec)   # list of JPEG bytes
    body = serving_client.rest_body([frames])                  # POST .../models/NAME:predict
    request = serving_client.grpc_request([frames], "vov3d_m") # PredictionService.Predict

Frames are read with `vov3d_tf.data.video_io.read_video` (every frame, resized to the spec's
test short side, JPEG quality 90: what `vov3d-build-shards` stores) and sampled with
`vov3d_tf.data.preprocess.eval_indices`, the function the graph and evaluation use, so the
served result equals evaluation of the same video. The spec comes from the export's
`assets.extra/export_info.json` (copy that file to clients; TF Serving does not serve it).
"""
import base64
import json
import os

import numpy as np

from vov3d_tf import fileio
from vov3d_tf.data import format as fmt
from vov3d_tf.deploy import serving

__all__ = ["read_spec", "sample_indices", "sample_frames", "rest_body", "grpc_request",
           "outputs_from_rest", "outputs_from_grpc"]


def read_spec(saved_model_dir_or_info):
    """The `ServingSpec` recorded at export: a SavedModel version folder or its
    `export_info.json` (local or any `fileio` path)."""
    path = os.fspath(saved_model_dir_or_info)
    if fileio.isdir(path):
        path = fileio.join(path, "assets.extra", serving.EXPORT_INFO_FILE)
    if not fileio.exists(path):
        raise FileNotFoundError(f"{path}: not found (expected a SavedModel version folder or "
                                f"its assets.extra/{serving.EXPORT_INFO_FILE})")
    try:
        info = fileio.read_json(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    if not isinstance(info, dict) or "spec" not in info:
        raise ValueError(f"{path}: no 'spec' entry (not written by vov3d_tf export)")
    return serving.ServingSpec.from_dict(info["spec"])


def sample_indices(num_video_frames, spec):
    """Indices of the frames the graph would sample, clip-major: int array (num_clips * T,)."""
    from vov3d_tf.data import preprocess

    if num_video_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_video_frames}")
    idx = preprocess.eval_indices(num_video_frames, spec.views)
    return np.asarray(idx).reshape(-1)


def sample_frames(path, spec, *, fps=None, jpeg_quality=fmt.JPEG_QUALITY):
    """JPEG bytes of the `num_clips * T` frames of the video file `path` the model looks at,
    resized to the spec's test short side (never upscaled); raises ValueError naming the file
    if it cannot be read."""
    from vov3d_tf.data.video_io import VideoError, read_video

    try:
        jpegs = read_video(path, short_side=spec.views.short_side, fps=fps,
                           jpeg_quality=jpeg_quality)
    except VideoError as e:
        raise ValueError(f"{path}: {e}") from None
    return [jpegs[i] for i in sample_indices(len(jpegs), spec)]


def _videos(videos):
    videos = [list(v) for v in videos]
    if not videos:
        raise ValueError("send at least one video, got none")
    empty = [i for i, v in enumerate(videos) if not v]
    if empty:
        raise ValueError(f"every video needs at least one frame; videos {empty} have none")
    if len({len(v) for v in videos}) > 1:
        raise ValueError(f"all videos of one request need the same number of frames (a dense "
                         f"tensor), got {[len(v) for v in videos]}")
    return videos


def rest_body(videos, signature=serving.SIGNATURE_JPEG):
    """TF Serving REST predict body (row format) for a list of videos (lists of JPEG bytes):
    {"signature_name": ..., "instances": [{"frames": [{"b64": ...}, ...]}, ...]}."""
    return {"signature_name": signature,
            "instances": [{"frames": [{"b64": base64.b64encode(f).decode("ascii")} for f in v]}
                          for v in _videos(videos)]}


def grpc_request(videos, model_name, signature=serving.SIGNATURE_JPEG, version=None):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for a list of videos."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs["frames"].CopyFrom(
        tf.make_tensor_proto(np.array(_videos(videos), dtype=object), dtype=tf.string))
    return request


def outputs_from_rest(reply):
    """{output: numpy array} from a REST predict reply (row format); raises with the server's
    error message."""
    if "error" in reply:
        raise ValueError(f"server error: {reply['error']}")
    rows = reply["predictions"]
    return {key: np.array([row[key] for row in rows]) for key in serving.OUTPUT_KEYS}


def outputs_from_grpc(reply):
    """{output: numpy array} from a `PredictResponse`."""
    import tensorflow as tf

    return {key: tf.make_ndarray(reply.outputs[key]) for key in serving.OUTPUT_KEYS}
