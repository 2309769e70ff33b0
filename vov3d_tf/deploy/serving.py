"""SavedModel export for TF Serving: signatures that take what clients really send.

`export_saved_model(model, "BASE/NAME", labels, spec)` writes `BASE/NAME/<version>/`:

    saved_model.pb, variables/        the BN-folded model inside a plain `tf.Module`
    assets/labels.txt                 one class name per line (read by the graph's label table)
    assets.extra/tf_serving_warmup_requests   PredictionLog records, one per signature
    assets.extra/export_info.json     preprocessing spec, model config, label count

Signatures (all return `logits`, `probabilities`, `top_k_indices`, `top_k_labels`):

    serving_default   frames   string  (batch, frames)            encoded JPEGs, any count >= 1
    serve_frames      frames   uint8   (batch, frames, H, W, 3)   decoded RGB frames, any size
    serve_examples    examples string  (batch,)                   serialized SequenceExamples
                                                                  in the shard format
(with `ServingSpec.presampled`, the two frame signatures take exactly num_clips x T frames per
video, sampled by the client: `vov3d_tf.deploy.serving_client`).

Every signature goes through `vov3d_tf.data.preprocess.eval_views[_from_frames]`, the very
functions evaluation uses (sampling of the model's T frames, short-side bilinear resize, centre
or three crops, normalization), so what is served is what was measured. With more than one view
(`num_clips x num_crops`, the `--multi-view` export) `logits` and `probabilities` are the mean
over views of the per-view logits and softmax (evaluation sums the softmax; the ranking is
the same).

The inputs are declared with unknown rank and checked in the graph: TF Serving's C++ session
does not validate feed shapes against the signature, so a declared rank would be trusted, not
checked. A wrong rank, a frame count of 0, a non-RGB uint8 array or an undecodable JPEG fail
with an `InvalidArgument` error naming the input; a wrong dtype is rejected by the session.

The graph is meant for a network, so what a request costs is bounded by the spec, not by the
client: `ServingSpec.limits` (`preprocess.InputLimits`: frames, pixels, aspect ratio, bytes and
JPEG scans per frame, checked from the JPEG headers and bytes before decoding), `max_videos`
per request, `max_request_pixel_scans` (the JPEG decoding a request needs, summed from the
headers before any frame is decoded), and `clips_per_chunk`: a request's videos are
preprocessed and classified a chunk at a time in a `tf.while_loop`, so peak memory does not
grow with the batch. Each violation is an `InvalidArgument` naming the cap, its limit and the
value (docs/serving.md).

Loading needs only TensorFlow (`tf.saved_model.load` or TF Serving); no Keras, no vov3d_tf.
"""
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from vov3d_tf import fileio
from vov3d_tf.data import format as fmt
from vov3d_tf.data import preprocess
from vov3d_tf.data.specs import EvalViews

SIGNATURE_JPEG = "serving_default"
SIGNATURE_FRAMES = "serve_frames"
SIGNATURE_EXAMPLES = "serve_examples"
SIGNATURES = (SIGNATURE_JPEG, SIGNATURE_FRAMES, SIGNATURE_EXAMPLES)
INPUT_KEYS = {SIGNATURE_JPEG: "frames", SIGNATURE_FRAMES: "frames", SIGNATURE_EXAMPLES: "examples"}
OUTPUT_KEYS = ("logits", "probabilities", "top_k_indices", "top_k_labels")
LABELS_ASSET = "labels.txt"
WARMUP_FILE = "tf_serving_warmup_requests"  # the name TF Serving looks for in assets.extra/
EXPORT_INFO_FILE = "export_info.json"
WARMUP_ASPECT = 4 / 3  # warmup frames are landscape 4:3 at the test short side


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """What the exported graph serves: its test views (`EvalViews`, evaluation's own), how many
    labels it returns, and the cost bounds of one request (docs/serving.md): caps per video
    (`limits`), videos per request, the JPEG decoding of a request, clips through the model at
    once. `presampled`: the frame signatures take exactly the num_clips x T sampled frames per
    video (client-side sampling, for TF Serving's request batching)."""
    views: EvalViews
    top_k: int = 5
    limits: preprocess.InputLimits = preprocess.InputLimits()
    max_videos: int = 16
    max_request_pixel_scans: int = 2**29
    clips_per_chunk: int = 8
    presampled: bool = False

    def __post_init__(self):
        if isinstance(self.views, dict):  # as written in export_info.json
            object.__setattr__(self, "views", EvalViews(**self.views))
        if isinstance(self.limits, dict):
            object.__setattr__(self, "limits", preprocess.InputLimits(**self.limits))
        if not isinstance(self.views, EvalViews):
            raise ValueError(f"ServingSpec.views must be an EvalViews, got {self.views!r}")
        if not isinstance(self.limits, preprocess.InputLimits):
            raise ValueError(f"ServingSpec.limits must be an InputLimits, got {self.limits!r}")
        if not isinstance(self.presampled, bool):
            raise ValueError(f"ServingSpec.presampled must be a bool, got {self.presampled!r}")
        for key in ("top_k", "max_videos", "max_request_pixel_scans", "clips_per_chunk"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServingSpec.{key} must be a positive int, got {value!r}")

    @classmethod
    def from_dict(cls, d):
        """The spec as `export_info.json` records it (`dataclasses.asdict`); exports written
        before `views` existed kept the view fields at the top level."""
        d = dict(d)
        if "views" not in d:
            view_keys = [f.name for f in dataclasses.fields(EvalViews)]
            d["views"] = {k: d.pop(k) for k in view_keys if k in d}
        return cls(**d)

    def serving_kwargs(self, where):
        """The caps and client-side sampling of the served graph: keyword arguments of
        `preprocess.eval_views` / `eval_views_from_frames` beside `views`."""
        return dict(limits=self.limits, presampled=self.presampled, where=where)

    @property
    def frames_per_request_video(self):
        """Frames a client-sampling export takes per video (None: any count)."""
        return self.views.num_clips * self.views.num_frames if self.presampled else None


# ----------------------------------------------------------------------------------------------
# The served graph
# ----------------------------------------------------------------------------------------------

_guard = preprocess.guard


def _checked_input(x, name, layout, rank, frames_axis=None, image_axes=None):
    """Run-time checks of a signature input (declared with unknown rank, so never folded away):
    rank, at least one frame, non-empty images with 3 channels. InvalidArgument otherwise."""
    expected = f"input {name} must have shape {layout}; got shape"
    x = _guard(x, tf.equal(tf.rank(x), rank), expected, [tf.shape(x)])
    shape = tf.shape(x)
    if frames_axis is not None:
        x = _guard(x, shape[frames_axis] > 0,
                   f"input {name}: every video needs at least one frame; got shape", [shape])
    if image_axes is not None:
        x = _guard(x, tf.reduce_all(shape[image_axes[0]:image_axes[1]] > 0),
                   f"input {name}: height and width must be at least 1; got shape", [shape])
        x = _guard(x, tf.equal(shape[-1], 3),
                   f"input {name} must have shape {layout} (3 = RGB); got shape", [shape])
    return tf.ensure_shape(x, [None] * (rank - 1) + [3 if image_axes is not None else None])


def _chunked(fn, x, size, out_shape):
    """concat([fn(x[i:i + size]) for i in range(0, len(x), size)]), one chunk after another in
    a tf.while_loop (so only one chunk's intermediates are alive); `out_shape` is the shape of
    one result with a None first axis. An empty `x` gives an empty result."""
    count = tf.shape(x)[0]
    steps = (count + size - 1) // size
    results = tf.TensorArray(tf.float32, size=steps, infer_shape=False, element_shape=out_shape)

    def body(i, results):
        return i + 1, results.write(i, fn(x[i * size:(i + 1) * size]))

    _, results = tf.while_loop(lambda i, _: i < steps, body, [tf.constant(0), results],
                               parallel_iterations=1)
    return tf.cond(steps > 0, results.concat,
                   lambda: tf.zeros([0] + list(out_shape[1:]), tf.float32))


class _Untracked:
    """Holds an object out of tf.Module's dependency tracking."""

    def __init__(self, value):
        self.value = value


class VideoServingModule(tf.Module):
    """The model plus its preprocessing and label table, with one `tf.function` per signature."""

    def __init__(self, model, labels_path, spec, name="vov3d_serving"):
        super().__init__(name=name)
        self._keras = _Untracked(model)
        self.spec = spec
        self.num_classes = int(model.output_shape[-1])
        self.labels_asset = tf.saved_model.Asset(labels_path)
        self.label_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.labels_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, vocab_size=self.num_classes),
            default_value="")
        self._view_shape = [spec.views.num_views, *spec.views.view_shape]
        # Save the tf.Variables the signatures capture, not the Keras object graph: the TF1
        # session loader (saved_model_cli run, TF Serving) restores variables through the saver,
        # which would not see the handles captured through Keras 3 variables otherwise.
        captured = {}
        for fn in self.signatures().values():
            for v in fn.get_concrete_function().variables:
                captured.setdefault(id(v), v)
        self.model_variables = list(captured.values())

    @property
    def model(self):
        return self._keras.value

    # -- shared tail ---------------------------------------------------------------------------

    def _outputs(self, logits):
        """float32 logits (batch, views, classes) -> the output dict."""
        probabilities = tf.reduce_mean(tf.nn.softmax(logits, axis=-1), axis=1)
        logits = tf.reduce_mean(logits, axis=1)
        k = min(self.spec.top_k, self.num_classes)
        _, top_k = tf.math.top_k(probabilities, k=k)
        top_k = tf.cast(top_k, tf.int64)
        return {"logits": logits, "probabilities": probabilities, "top_k_indices": top_k,
                "top_k_labels": self.label_table.lookup(top_k)}

    def _model_logits(self, clips):
        """float32 normalized clips (n, T, c, c, 3), n >= 1 -> float32 logits (n, classes), at
        most `clips_per_chunk` clips through the model at once."""
        return _chunked(lambda part: tf.cast(self.model(part, training=False), tf.float32),
                        clips, self.spec.clips_per_chunk, [None, self.num_classes])

    def classify(self, videos, views_of):
        """Videos (batch, ...) -> the output dict, `views_of(video)` giving its normalized
        views (views, T, c, c, 3). Videos go through preprocessing and the model a chunk at a
        time (`clips_per_chunk` clips), so a request's peak memory does not grow with its size.
        """
        views = self.spec.views.num_views
        per_chunk = max(1, self.spec.clips_per_chunk // views)

        def chunk_logits(part):
            clips = tf.map_fn(views_of, part, parallel_iterations=1,
                              fn_output_signature=tf.TensorSpec(self._view_shape, tf.float32))
            flat = tf.reshape(clips, [-1] + self._view_shape[1:])
            return tf.reshape(self._model_logits(flat), [-1, views, self.num_classes])

        return self._outputs(_chunked(chunk_logits, videos, per_chunk,
                                      [None, views, self.num_classes]))

    def _checked_batch(self, x, name):
        count = tf.shape(x)[0]
        return _guard(x, count <= self.spec.max_videos,
                      f"input {name}: videos per request over the cap max_videos="
                      f"{self.spec.max_videos}; videos:", [count])

    def _checked_decode_work(self, x, name, frames_of=lambda video: video, **kwargs):
        """`x` once the decoding the request needs (sum of pixels x scans of the sampled JPEG
        frames, from headers) is within `max_request_pixel_scans`: checked for the whole
        request before any frame is decoded."""
        kwargs = dict(self.spec.serving_kwargs(f"input {name}"), **kwargs)
        work = tf.map_fn(lambda video: preprocess.decode_work(frames_of(video), self.spec.views,
                                                              **kwargs), x,
                         fn_output_signature=tf.int64)
        total = tf.reduce_sum(work)
        cap = self.spec.max_request_pixel_scans
        return _guard(x, total <= cap, f"input {name}: JPEG decoding work (pixels x scans of the "
                      f"sampled frames) per request over the cap max_request_pixel_scans={cap}; "
                      f"work:", [total])

    # -- signatures ----------------------------------------------------------------------------

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="frames")])
    def serve_jpeg(self, frames):
        """Encoded JPEG frames, string (batch, frames): T frames are sampled per video (or
        exactly the sampled frames, with client-side sampling)."""
        frames = _checked_input(frames, "frames", "(batch, frames) of encoded JPEGs", rank=2,
                                frames_axis=1)
        frames = self._checked_batch(frames, "frames")
        frames = self._checked_decode_work(frames, "frames")
        kwargs = self.spec.serving_kwargs("input frames")
        return self.classify(frames, lambda video: preprocess.eval_views(
            video, self.spec.views, **kwargs))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="frames")])
    def serve_frames(self, frames):
        """Decoded RGB frames, uint8 (batch, frames, H, W, 3), any frame count and size (within
        the caps)."""
        frames = _checked_input(frames, "frames", "(batch, frames, height, width, 3) of uint8 RGB",
                                rank=5, frames_axis=1, image_axes=(2, 4))
        frames = self._checked_batch(frames, "frames")
        kwargs = self.spec.serving_kwargs("input frames")
        return self.classify(frames,
                             lambda video: preprocess.eval_views_from_frames(
                                 video, self.spec.views, **kwargs))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="examples")])
    def serve_examples(self, examples):
        """Serialized `tf.train.SequenceExample`s in the shard format, string (batch,); whole
        videos, sampled in the graph."""
        examples = _checked_input(examples, "examples", "(batch,) of serialized SequenceExamples",
                                  rank=1)
        examples = self._checked_batch(examples, "examples")

        def frames_of(serialized):
            record = fmt.parse_sequence_example(serialized)
            return _guard(record["frames"], record["num_frames"] > 0,
                          f"input examples: feature list {fmt.IMAGE_KEY} has no frames "
                          f"in video", [record["filename"]])

        examples = self._checked_decode_work(examples, "examples", presampled=False,
                                             frames_of=frames_of)
        kwargs = dict(self.spec.serving_kwargs("input examples"), presampled=False)
        return self.classify(examples,
                             lambda serialized: preprocess.eval_views(
                                 frames_of(serialized), self.spec.views, **kwargs))

    def signatures(self):
        return {SIGNATURE_JPEG: self.serve_jpeg, SIGNATURE_FRAMES: self.serve_frames,
                SIGNATURE_EXAMPLES: self.serve_examples}


# ----------------------------------------------------------------------------------------------
# Version folders
# ----------------------------------------------------------------------------------------------

def existing_versions(model_dir):
    """Sorted integer versions in `model_dir` (the folders TF Serving would consider)."""
    if not fileio.isdir(model_dir):
        return []
    return sorted(int(n) for n in fileio.listdir(model_dir)
                  if n.isdigit() and fileio.isdir(os.path.join(model_dir, n)))


def next_version(model_dir):
    """1 for a new model folder, else the largest existing version + 1."""
    return max(existing_versions(model_dir), default=0) + 1


def _check_model_dir(model_dir):
    base = os.path.basename(os.path.normpath(model_dir))
    if base.isdigit():
        raise ValueError(f"output dir {model_dir!r} ends in a version number; pass the model "
                         f"folder BASE/NAME, the version folder is created inside it")
    if fileio.exists(model_dir) and not fileio.isdir(model_dir):
        raise ValueError(f"output dir {model_dir!r} exists and is not a folder")


# ----------------------------------------------------------------------------------------------
# Warmup requests (assets.extra/tf_serving_warmup_requests)
# ----------------------------------------------------------------------------------------------

def warmup_frames(spec, num_frames=None, seed=0):
    """Deterministic uint8 frames (frames, H, W, 3) of a realistic size: 4:3 at the short side."""
    n = num_frames or spec.frames_per_request_video or spec.views.num_frames
    h = spec.views.short_side
    w = int(round(h * WARMUP_ASPECT))
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(n):  # a moving gradient plus noise: non-trivial JPEGs, different frames
        base = np.stack([(x + 4 * t) % 256, (y + 2 * t) % 256, (x + y) % 256], axis=-1)
        noise = rng.integers(0, 32, size=base.shape)
        frames.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return np.stack(frames)


def encode_jpegs(frames, quality=fmt.JPEG_QUALITY):
    """uint8 (N, H, W, 3) -> list of JPEG bytes."""
    return [tf.io.encode_jpeg(f, quality=quality).numpy() for f in frames]


def warmup_inputs(spec):
    """{signature: {input key: numpy array}}, one video per signature (batch 1)."""
    frames = warmup_frames(spec)
    jpegs = encode_jpegs(frames)
    example = fmt.make_sequence_example(jpegs, 0, "warmup", "warmup").SerializeToString()
    return {SIGNATURE_JPEG: {"frames": np.array([jpegs], dtype=object)},
            SIGNATURE_FRAMES: {"frames": frames[np.newaxis]},
            SIGNATURE_EXAMPLES: {"examples": np.array([example], dtype=object)}}


def write_warmup(path, spec, model_name):
    """Writes one PredictLog request per signature as a TFRecord file of PredictionLogs."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in warmup_inputs(spec).items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def read_warmup(path):
    """The PredictionLog records of a warmup file (raises if a record does not parse)."""
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for i, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except Exception as e:  # protobuf's DecodeError
            raise ValueError(f"{path}: record {i} is not a PredictionLog: {e}") from None
        logs.append(log)
    return logs


def replay_warmup(saved_model_dir, loaded=None):
    """Runs every warmup request through the SavedModel as TF Serving does at load time.

    Returns a list of (signature name, {output key: numpy array}).
    """
    loaded = loaded or tf.saved_model.load(saved_model_dir)
    results = []
    for log in read_warmup(os.path.join(saved_model_dir, "assets.extra", WARMUP_FILE)):
        request = log.predict_log.request
        name = request.model_spec.signature_name or SIGNATURE_JPEG
        fn = loaded.signatures[name]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        results.append((name, {k: v.numpy() for k, v in fn(**inputs).items()}))
    return results


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------

def check_labels(labels, num_classes, source="labels"):
    """A list of `num_classes` non-empty one-line class names."""
    labels = [str(label) for label in labels]
    if len(labels) != num_classes:
        raise ValueError(f"{source}: {len(labels)} labels but the model has {num_classes} classes")
    for i, label in enumerate(labels):
        if not label.strip() or "\n" in label or "\r" in label:
            raise ValueError(f"{source}: label {i} ({label!r}) must be non-empty, on one line")
    return labels


def export_saved_model(model, model_dir, labels, spec, *, version=None, warmup=True,
                       extra_info=None):
    """Export `model` (a `VideoClassifier`; BN is folded here) to `model_dir/<version>/`.

    `version` None takes the next free integer; an existing version is never overwritten. The
    SavedModel is written to a hidden temporary folder beside it and renamed when complete, so
    TF Serving never sees a half-written version. Returns the version folder's path.
    """
    from vov3d_tf.model.inference import fold_batchnorm

    _check_model_dir(model_dir)
    if not isinstance(spec, ServingSpec):
        raise TypeError(f"spec must be a ServingSpec, got {type(spec).__name__}")
    num_classes = int(model.output_shape[-1])
    labels = check_labels(labels, num_classes)
    if version is None:
        version = next_version(model_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive int, got {version!r}")
    final = os.path.join(model_dir, str(version))
    if version in existing_versions(model_dir) or fileio.exists(final):
        raise FileExistsError(f"version {version} already exists in {model_dir!r} "
                              f"(existing: {existing_versions(model_dir)}); versions are never "
                              f"overwritten, pick another --version or leave it out")
    fileio.makedirs(model_dir)
    tmp = fileio.make_temp_dir(model_dir, prefix=f".tmp-{version}-")  # not an integer: ignored
    try:
        labels_path = os.path.join(tmp, "labels-src", LABELS_ASSET)
        fileio.makedirs(os.path.dirname(labels_path))
        fileio.write_text(labels_path, "".join(label + "\n" for label in labels))
        module = VideoServingModule(fold_batchnorm(model), labels_path, spec)
        export = os.path.join(tmp, "export")
        tf.saved_model.save(module, export, signatures=module.signatures())
        extra = os.path.join(export, "assets.extra")
        fileio.makedirs(extra)
        if warmup:
            write_warmup(os.path.join(extra, WARMUP_FILE), spec,
                         os.path.basename(os.path.normpath(model_dir)))
        info = {"signatures": {s: INPUT_KEYS[s] for s in SIGNATURES}, "outputs": OUTPUT_KEYS,
                "spec": dataclasses.asdict(spec), "num_classes": num_classes,
                "model_config": model.get_config(), **(extra_info or {})}
        fileio.write_text(os.path.join(extra, EXPORT_INFO_FILE),
                          json.dumps(info, indent=2, default=str))
        if fileio.exists(final):
            raise FileExistsError(f"version {version} appeared in {model_dir!r} during export")
        fileio.move_tree(export, final)  # local: one rename; object stores: see fileio
    finally:
        if fileio.exists(tmp):
            fileio.rmtree(tmp)
    return final
