"""Pure TensorFlow preprocessing: temporal sampling, decoding, resizing, cropping, normalization.

Every function here is graph-safe (no Python control flow on tensor values), so the same code
runs in the tf.data training pipeline, in evaluation, in `predict` and inside the exported
serving graph: what is served is exactly what was measured.

The recipe is PySlowFast's, as used by the official VoV3D configs (docs/architecture.md); what
to make is a spec (`specs.TrainClip`, `specs.EvalViews`):
  * Something-Something: segment sampling, T equal segments, one frame each (random in training,
    segment centre at test); no horizontal flip (left/right is in the labels);
  * Kinetics: dense sampling, T frames at a stride (5 at 30 fps), a random window in training and
    N evenly spaced windows at test; random horizontal flip;
  * training: short side ~ U[256, 320] (or inverse-uniform, the SS configs), random 224 crop;
    test: short side 256, three 256 crops (left/centre/right or top/centre/bottom);
  * pixels / 255, then (x - 0.45) / 0.225, RGB.
Randomness is stateless: every random function takes a `seed` int32/int64 tensor of shape (2,),
so a pipeline is reproducible whatever its parallelism.

Test views cost what the model needs, not what the input declares: each distinct sampled frame
is decoded and resized on its own (uint8 in, float32 at the resize target out; short videos
repeat frames after resizing), and with `InputLimits` (the served graph) frames, pixels, aspect
ratio, bytes and JPEG scans are checked from headers and bytes before anything is decoded.
"""
import dataclasses

import tensorflow as tf

from vov3d_tf.config import NUM_CROPS, SAMPLING_MODES

MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)


def normalize(frames):
    """uint8 (or float in [0, 255]) RGB frames -> float32 `(x / 255 - MEAN) / STD`."""
    if frames.dtype == tf.uint8 and len(set(MEAN)) == 1 and len(set(STD)) == 1:
        # One pass instead of three (cast, scale, shift): `Dequantize` maps quint8 0..255 linearly
        # onto [min_range, max_range], which is this affine map. Same values to ~1 ulp, and it
        # saves two passes over a clip's floats (measured ~0.3 ms/clip in the input pipeline).
        return tf.raw_ops.Dequantize(input=tf.bitcast(frames, tf.quint8),
                                     min_range=-MEAN[0] / STD[0],
                                     max_range=(1.0 - MEAN[0]) / STD[0], mode="MIN_COMBINED")
    x = tf.cast(frames, tf.float32)
    if len(set(MEAN)) == 1 and len(set(STD)) == 1:
        # One scale and shift for all channels: scalar ops (a per-channel broadcast over a
        # last axis of 3 is ~10x slower on CPU).
        return x * (1.0 / (255.0 * STD[0])) - MEAN[0] / STD[0]
    return (x / 255.0 - tf.constant(MEAN, tf.float32)) / tf.constant(STD, tf.float32)


def _split_seed(seed, num):
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num))


# --- temporal sampling -------------------------------------------------------------------------

def segment_indices(num_video_frames, num_frames, *, training, seed=None, clip_index=0,
                    num_clips=1):
    """Something-Something segment sampling (PySlowFast `get_seq_frames`): int32 (num_frames,).

    The video is cut into `num_frames` segments of `(len - 1) / num_frames` frames; segment i
    spans [round(i * s), round((i + 1) * s)] (round half to even, as numpy). Training draws one
    frame uniformly per segment (needs `seed`); test takes position (clip_index + 0.5) /
    num_clips inside every segment, i.e. the centre with one clip, and distinct frames for the
    other test clips (the reference draws them at random instead). Short videos repeat frames.
    """
    n = tf.cast(num_video_frames, tf.float32)
    seg = (n - 1.0) / float(num_frames)
    i = tf.range(num_frames, dtype=tf.float32)
    start = tf.round(seg * i)
    end = tf.round(seg * (i + 1.0))
    if training:
        u = tf.random.stateless_uniform([num_frames], seed=seed)
        idx = start + tf.floor(u * (end - start + 1.0))
        idx = tf.minimum(idx, end)
    else:
        frac = (tf.cast(clip_index, tf.float32) + 0.5) / tf.cast(num_clips, tf.float32)
        idx = start + tf.floor((end - start) * frac)
    last = tf.maximum(tf.cast(num_video_frames, tf.int32) - 1, 0)
    return tf.clip_by_value(tf.cast(idx, tf.int32), 0, last)


def dense_indices(num_video_frames, num_frames, sampling_rate, *, training, seed=None,
                  clip_index=0, num_clips=1):
    """Kinetics dense sampling (PySlowFast `get_start_end_idx` + `temporal_sampling`).

    A window of `num_frames * sampling_rate` frames starts at U[0, delta] in training and at
    `delta * clip_index / num_clips` at test (delta = max(len - window, 0)); `num_frames`
    indices are spaced linearly over it and clamped to the video, so short videos repeat
    their last frame. Returns int32 (num_frames,).
    """
    n = tf.cast(num_video_frames, tf.float32)
    window = float(num_frames * sampling_rate)
    delta = tf.maximum(n - window, 0.0)
    if training:
        start = tf.random.stateless_uniform([], seed=seed) * delta
    else:
        start = delta * tf.cast(clip_index, tf.float32) / tf.cast(num_clips, tf.float32)
    idx = tf.linspace(start, start + window - 1.0, num_frames)
    idx = tf.clip_by_value(idx, 0.0, tf.maximum(n - 1.0, 0.0))
    return tf.cast(idx, tf.int32)  # truncation, as torch .long() on non-negative values


def sample_indices(num_video_frames, num_frames, *, sampling, sampling_rate, training, seed=None,
                   clip_index=0, num_clips=1):
    """Dispatches to `segment_indices` or `dense_indices` by `sampling`."""
    if sampling == "segment":
        return segment_indices(num_video_frames, num_frames, training=training, seed=seed,
                               clip_index=clip_index, num_clips=num_clips)
    if sampling == "dense":
        return dense_indices(num_video_frames, num_frames, sampling_rate, training=training,
                             seed=seed, clip_index=clip_index, num_clips=num_clips)
    raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")


# --- decoding ----------------------------------------------------------------------------------

def decode_jpegs(encoded):
    """string (N,) JPEGs -> uint8 (N, H, W, 3); all frames must have the same size."""
    return tf.map_fn(lambda s: tf.io.decode_jpeg(s, channels=3), encoded,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def decode_frames(encoded, indices, crop_window=None):
    """Decodes only the frames at `indices` (each distinct frame once): uint8
    (len(indices), H, W, 3).

    With `crop_window` [y, x, h, w] only that region of each frame is decoded (libjpeg skips the
    rest), giving (len(indices), h, w, 3).
    """
    unique, position = tf.unique(tf.reshape(indices, [-1]))
    selected = tf.gather(encoded, unique)
    if crop_window is None:
        frames = decode_jpegs(selected)
    else:
        frames = tf.map_fn(lambda s: tf.io.decode_and_crop_jpeg(s, crop_window, channels=3),
                           selected, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    # Distinct indices (the usual case): `frames` is already in order; skip the copy.
    return tf.cond(tf.equal(tf.size(unique), tf.size(position)), lambda: frames,
                   lambda: tf.gather(frames, position))


# --- spatial transforms (one transform for every frame of a clip) -------------------------------

def short_side_size(height, width, short_side):
    """(new_h, new_w) with the short side = `short_side`, long side floor-scaled (PySlowFast)."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    s = tf.cast(short_side, tf.float32)
    new_h = tf.where(h <= w, s, tf.floor(h / w * s))
    new_w = tf.where(h <= w, tf.floor(w / h * s), s)
    return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)


def resize_short_side(frames, short_side):
    """Bilinear (half-pixel centres = align_corners False) resize of (T, H, W, C) frames:
    float32."""
    shape = tf.shape(frames)
    new_h, new_w = short_side_size(shape[1], shape[2], short_side)
    frames = tf.cast(frames, tf.float32)
    unchanged = tf.logical_and(tf.equal(new_h, shape[1]), tf.equal(new_w, shape[2]))
    return tf.cond(unchanged, lambda: frames,
                   lambda: tf.image.resize(frames, tf.stack([new_h, new_w]), method="bilinear"))


# Extra decoded pixels around a crop window: libjpeg's chroma upsampling can differ from a full
# decode in the outermost row/column of a cropped decode.
_WINDOW_MARGIN = 2
# Width of a JPEG iMCU with 2x horizontal chroma subsampling (4:2:0/4:2:2, what the shard builder
# writes); a multiple of the 8 px of 4:4:4.
_MCU_WIDTH = 16


def decode_window(encoded, indices, window):
    """decode_frames(...)[:, y:y+h, x:x+w] for window (y, x, h, w), decoding only about that
    region of each JPEG (all frames must share one size, as in a shard)."""
    shape = tf.io.extract_jpeg_shape(encoded[0])[:2]
    start = tf.stack(window[:2])
    size = tf.stack(window[2:])
    lo = tf.maximum(start - _WINDOW_MARGIN, 0)
    # Start the decoded columns on a JPEG iMCU boundary: libjpeg can only begin a cropped
    # scanline there, and TF copies every row once more to drop the extra columns otherwise.
    lo = tf.stack([lo[0], lo[1] // _MCU_WIDTH * _MCU_WIDTH])
    hi = tf.minimum(start + size + _WINDOW_MARGIN, shape)
    frames = decode_frames(encoded, indices, crop_window=tf.concat([lo, hi - lo], axis=0))
    skip = start - lo
    return frames[:, skip[0]:skip[0] + size[0], skip[1]:skip[1] + size[1], :]


def random_resized_crop_window(height, width, crop_size, short_side, *, seed):
    """The input-pixel square (y, x, side, side) that random short-side scaling to
    `short_side` followed by a random `crop_size` crop would show.

    Resizing only this window to crop_size x crop_size equals resize-then-crop up to rounding
    the window to whole input pixels (side and position within 0.5 px): the same
    augmentation distribution at a fraction of the cost.
    """
    short = tf.minimum(height, width)
    side = tf.cast(crop_size, tf.float32) * tf.cast(short, tf.float32) / tf.cast(short_side,
                                                                                 tf.float32)
    side = tf.clip_by_value(tf.cast(tf.round(side), tf.int32), 1, short)
    y, x = random_crop_offset(height, width, side, seed=seed)
    return y, x, side, side


def random_short_side(scale_range, *, inverse_uniform, seed):
    """Draws the training short side: round(U[lo, hi]) or round(1 / U[1/hi, 1/lo])."""
    lo, hi = float(scale_range[0]), float(scale_range[1])
    u = tf.random.stateless_uniform([], seed=seed)
    if inverse_uniform:
        size = 1.0 / (1.0 / hi + u * (1.0 / lo - 1.0 / hi))
    else:
        size = lo + u * (hi - lo)
    return tf.cast(tf.round(size), tf.int32)


def crop(frames, y, x, crop_size):
    """(T, H, W, C) -> (T, crop_size, crop_size, C) at offset (y, x)."""
    out = frames[:, y:y + crop_size, x:x + crop_size, :]
    return tf.ensure_shape(out, [None, crop_size, crop_size, None])


def random_crop_offset(height, width, crop_size, *, seed):
    """Uniform (y, x) of a crop_size square inside height x width."""
    u = tf.random.stateless_uniform([2], seed=seed)
    y = tf.cast(tf.floor(u[0] * tf.cast(height - crop_size + 1, tf.float32)), tf.int32)
    x = tf.cast(tf.floor(u[1] * tf.cast(width - crop_size + 1, tf.float32)), tf.int32)
    return tf.maximum(y, 0), tf.maximum(x, 0)


def random_crop(frames, crop_size, *, seed):
    """The same random square crop on every frame."""
    shape = tf.shape(frames)
    y, x = random_crop_offset(shape[1], shape[2], crop_size, seed=seed)
    return crop(frames, y, x, crop_size)


def random_flip(frames, *, seed):
    """Horizontal flip of the whole clip with probability 0.5."""
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    return tf.cond(flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)


def spatial_crops(frames, crop_size, num_crops):
    """Test crops (PySlowFast `uniform_crop`): (num_crops, T, c, c, C).

    num_crops 3: left/centre/right along the long side (top/centre/bottom for portrait video);
    num_crops 1: the centre crop.
    """
    if num_crops not in NUM_CROPS:
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops!r}")
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    cy = (h - crop_size + 1) // 2  # ceil((h - c) / 2)
    cx = (w - crop_size + 1) // 2
    if num_crops == 1:
        return crop(frames, cy, cx, crop_size)[tf.newaxis]
    portrait = h > w
    views = []
    for k in range(3):
        if k == 0:
            y, x = tf.where(portrait, 0, cy), tf.where(portrait, cx, 0)
        elif k == 1:
            y, x = cy, cx
        else:
            y, x = tf.where(portrait, h - crop_size, cy), tf.where(portrait, cx, w - crop_size)
        views.append(crop(frames, y, x, crop_size))
    return tf.stack(views)


# --- whole clips ---------------------------------------------------------------------------------

def train_clip(encoded, clip, *, seed):
    """Encoded frames (N,) -> one augmented training clip (a `specs.TrainClip`), float32
    (T, c, c, 3)."""
    num_frames, crop_size = clip.num_frames, clip.crop_size
    s_time, s_scale, s_crop, s_flip = _split_seed(seed, 4)
    idx = sample_indices(tf.shape(encoded)[0], num_frames, sampling=clip.sampling,
                         sampling_rate=clip.sampling_rate, training=True, seed=s_time)
    size = random_short_side(clip.short_side_range, inverse_uniform=clip.inverse_uniform,
                             seed=s_scale)
    shape = tf.io.extract_jpeg_shape(encoded[0])
    # Decode only the window the crop shows, normalize it (linear, so it commutes with bilinear
    # resizing; the window is usually smaller than the crop), resize it to the crop.
    window = random_resized_crop_window(shape[0], shape[1], crop_size, size, seed=s_crop)
    frames = normalize(decode_window(encoded, idx, window))
    frames = tf.image.resize(frames, [crop_size, crop_size], method="bilinear")
    if clip.random_flip:
        frames = random_flip(frames, seed=s_flip)
    return tf.ensure_shape(frames, [num_frames, crop_size, crop_size, 3])


def eval_indices(num_video_frames, views, *, segment_seed=None):
    """Frame indices of the test clips of `views` (a `specs.EvalViews`): int32
    (num_clips, num_frames).

    With `segment_seed` (segment sampling, several clips) each clip draws one random frame per
    segment, the reference implementation's test protocol (docs/architecture.md),
    reproducibly; without it clip k takes position (k + 0.5) / num_clips in every segment.
    """
    if segment_seed is not None and views.sampling == "segment" and views.num_clips > 1:
        seeds = _split_seed(segment_seed, views.num_clips)
        return tf.stack([segment_indices(num_video_frames, views.num_frames, training=True,
                                         seed=s) for s in seeds])
    return tf.stack([sample_indices(num_video_frames, views.num_frames, sampling=views.sampling,
                                    sampling_rate=views.sampling_rate, training=False,
                                    clip_index=c, num_clips=views.num_clips)
                     for c in range(views.num_clips)])


# --- caps on what one test video may cost ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InputLimits:
    """Caps on one video of untrusted input, checked before anything is decoded (None = no cap).

    Every violation is an InvalidArgument error naming the cap, its limit and the value. The
    defaults take what real clients send (phone video at 1080p, 4K at most, any common aspect
    ratio, baseline or progressive JPEG) and refuse what only costs: see docs/serving.md.

    `dct_scaling_above` is not a cap but a cost bound: JPEG frames with more pixels than this
    are decoded with libjpeg's DCT scaling (1/2, 1/4 or 1/8 size, the smallest that keeps the
    short side at or above the resize target) before the bilinear resize. The pixels then
    differ slightly from a full decode (measured in docs/serving.md); frames at or below it are
    decoded in full, exactly as evaluation does. None = always decode in full.
    """
    max_frames: int | None = 512
    max_frame_pixels: int | None = 4096 * 2304
    max_aspect_ratio: float | None = 4.0
    max_frame_bytes: int | None = 8 * 2**20
    max_scans: int | None = 32
    dct_scaling_above: int | None = 2560 * 1440

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
                raise ValueError(f"InputLimits.{field.name} must be a number >= 1 or None, "
                                 f"got {value!r}")
            if field.name != "max_aspect_ratio" and not isinstance(value, int):
                raise ValueError(f"InputLimits.{field.name} must be an int, got {value!r}")


NO_LIMITS = InputLimits(max_frames=None, max_frame_pixels=None, max_aspect_ratio=None,
                        max_frame_bytes=None, max_scans=None, dct_scaling_above=None)

DECODE_PARALLELISM = 4  # frames decoded (and alive at full size) at once per video
_JPEG_MAGIC = b"\xff\xd8\xff"
_SOS = (0xFF, 0xDA)  # start-of-scan marker: one per scan (entropy-coded data stuffs 0xFF 0x00)
_OTHER_FORMATS = ((0, b"\x89PNG", "PNG"), (0, b"GIF8", "GIF"), (8, b"WEBP", "WebP"),
                  (0, b"BM", "BMP"), (0, b"II*\x00", "TIFF"), (0, b"MM\x00*", "TIFF"),
                  (4, b"ftyp", "HEIF/AVIF/MP4"))


def guard(x, ok, message, data=()):
    """`x` once `ok` holds, else an InvalidArgument error with `message` and `data`.

    A data dependency (tf.cond), not a control dependency: grappler's constant folding
    rewrites Shape(checked x) to Shape(x) when it can prove both have the same shape, and then
    shape-dependent ops run before (and fail instead of) the assert. The failing branch returns
    a differently shaped (empty) tensor so that no such proof exists.
    """
    def fail():
        with tf.control_dependencies([tf.debugging.Assert(False, [message, *data], summarize=16)]):
            return tf.reshape(x, [-1])[:0]

    return tf.cond(ok, lambda: tf.identity(x), fail)


def _cap_message(where, what, cap, limit, value):
    return f"{where}: {what} over the cap {cap}={limit}; {value}:"


def _format_name(encoded):
    """Name of the image format of the bytes `encoded` (scalar), by magic number."""
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(encoded, 0, 12), b"\0" * 12]),
                             0, 12)
    name = tf.constant("not an image format this graph knows")
    for pos, magic, label in reversed(_OTHER_FORMATS):
        name = tf.where(tf.equal(tf.strings.substr(head, pos, len(magic)), magic), label, name)
    return name


def count_scans(encoded):
    """Number of start-of-scan markers (0xFF 0xDA) in the JPEG bytes `encoded` (scalar): 1 for
    baseline, ~10 for a usual progressive JPEG. Counts from the bytes without decoding (markers
    inside an APP segment, e.g. an EXIF thumbnail's, count too: an upper bound)."""
    b = tf.io.decode_raw(encoded, tf.uint8)
    return tf.reduce_sum(tf.cast(tf.logical_and(tf.equal(b[:-1], _SOS[0]),
                                                tf.equal(b[1:], _SOS[1])), tf.int32))


def _checked_jpeg_header(encoded, index, limits, where):
    """int32 (height, width, scans) of one frame from its header and bytes, after the format,
    byte and scan caps."""
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 3), _JPEG_MAGIC)
    encoded = guard(encoded, is_jpeg, f"{where}: frame is not a JPEG (only JPEG frames are "
                    f"decoded; PNG, WebP, GIF, ... are refused); detected format, frame index:",
                    [_format_name(encoded), index])
    if limits.max_frame_bytes is not None:
        size = tf.strings.length(encoded)
        encoded = guard(encoded, size <= limits.max_frame_bytes, _cap_message(
            where, "JPEG frame size", "max_frame_bytes", limits.max_frame_bytes,
            "frame index, bytes"), [index, size])
    scans = count_scans(encoded)
    if limits.max_scans is not None:
        encoded = guard(encoded, scans <= limits.max_scans, _cap_message(
            where, "JPEG scans (progressive passes) per frame", "max_scans", limits.max_scans,
            "frame index, scans"), [index, scans])
    return tf.concat([tf.io.extract_jpeg_shape(encoded)[:2], [scans]], axis=0)


def _headers(encoded, unique, limits, where):
    """int32 (len(unique), 3): height, width, scans of the frames `unique` of `encoded`."""
    return tf.map_fn(lambda a: _checked_jpeg_header(a[0], a[1], limits, where),
                     (tf.gather(encoded, unique), unique),
                     fn_output_signature=tf.TensorSpec([3], tf.int32))


def _check_frame_sizes(x, heights, widths, indices, limits, where):
    """`x` after the pixel and aspect caps on frames of (heights, widths), indices naming them."""
    h = tf.cast(heights, tf.int64)
    w = tf.cast(widths, tf.int64)

    def first(bad):  # position of the first offending frame (0 if none)
        return tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)

    if limits.max_frame_pixels is not None:
        bad = h * w > limits.max_frame_pixels
        k = first(bad)
        x = guard(x, tf.logical_not(tf.reduce_any(bad)), _cap_message(
            where, "frame pixels", "max_frame_pixels", limits.max_frame_pixels,
            "frame index, height, width"), [tf.gather(indices, k), heights[k], widths[k]])
    if limits.max_aspect_ratio is not None:
        long = tf.cast(tf.maximum(h, w), tf.float64)
        short = tf.cast(tf.minimum(h, w), tf.float64)
        bad = long > float(limits.max_aspect_ratio) * short
        k = first(bad)
        x = guard(x, tf.logical_not(tf.reduce_any(bad)), _cap_message(
            where, "frame aspect ratio (long side / short side)", "max_aspect_ratio",
            limits.max_aspect_ratio, "frame index, height, width"),
            [tf.gather(indices, k), heights[k], widths[k]])
    return x


def _check_frame_count(x, count, limits, where):
    if limits.max_frames is None:
        return x
    return guard(x, count <= limits.max_frames, _cap_message(
        where, "frames per video", "max_frames", limits.max_frames, "frames"), [count])


def _dct_branch(height, width, short_side, limits):
    """Index into (1, 2, 4, 8) of the DCT scaling for a height x width frame: the largest
    ratio whose output short side stays >= `short_side`, for frames over `dct_scaling_above`."""
    if limits.dct_scaling_above is None:
        return tf.constant(0)
    short = tf.minimum(height, width)
    big = tf.cast(height, tf.int64) * tf.cast(width, tf.int64) > limits.dct_scaling_above
    branch = tf.constant(0)
    for b, r in enumerate((2, 4, 8), start=1):  # libjpeg's scaled size is ceil(size / r)
        branch = tf.where(tf.logical_and(big, (short + r - 1) // r >= short_side), b, branch)
    return branch


def _decode_parallelism():
    return None if tf.executing_eagerly() else DECODE_PARALLELISM  # eager map_fn is serial


def _resize_to(frame, new_h, new_w):
    """One uint8 (or float) frame -> float32 (new_h, new_w, 3), bilinear; resizing uint8 reads
    it directly (the same values as resizing its float32 copy, without the copy)."""
    frame = tf.ensure_shape(frame, [None, None, None])
    shape = tf.shape(frame)
    unchanged = tf.logical_and(tf.equal(shape[0], new_h), tf.equal(shape[1], new_w))
    return tf.cond(unchanged, lambda: tf.cast(frame, tf.float32),
                   lambda: tf.image.resize(frame, tf.stack([new_h, new_w]), method="bilinear"))


def _resized_jpegs(encoded, unique, short_side, limits, where):
    """Decode and resize the frames `unique` of `encoded` one at a time, after checking every
    header: float32 (len(unique), h', w', 3) with the short side at `short_side`."""
    selected = tf.gather(encoded, unique)
    sizes = _headers(encoded, unique, limits, where)
    heights, widths = sizes[:, 0], sizes[:, 1]
    selected = _check_frame_sizes(selected, heights, widths, unique, limits, where)
    differ = tf.logical_or(tf.not_equal(heights, heights[0]), tf.not_equal(widths, widths[0]))
    k = tf.argmax(tf.cast(differ, tf.int32), output_type=tf.int32)
    selected = guard(selected, tf.logical_not(tf.reduce_any(differ)),
                     f"{where}: all frames of one video must have the same size; frame index, "
                     f"height, width vs. frame index, height, width:",
                     [unique[k], heights[k], widths[k], unique[0], heights[0], widths[0]])
    new_h, new_w = short_side_size(heights[0], widths[0], short_side)
    branch = _dct_branch(heights[0], widths[0], short_side, limits)

    def one(s):
        if limits.dct_scaling_above is None:
            frame = tf.io.decode_jpeg(s, channels=3)
        else:
            frame = tf.switch_case(branch, [
                lambda r=r: tf.io.decode_jpeg(s, channels=3, ratio=r) for r in (1, 2, 4, 8)])
        return _resize_to(frame, new_h, new_w)

    return tf.map_fn(one, selected, parallel_iterations=_decode_parallelism(),
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32))


def _resized_frames(frames, unique, short_side):
    """Resize the frames `unique` of decoded frames (N, H, W, 3) one at a time: float32."""
    shape = tf.shape(frames)
    new_h, new_w = short_side_size(shape[1], shape[2], short_side)
    return tf.map_fn(lambda i: _resize_to(frames[i], new_h, new_w), unique,
                     parallel_iterations=_decode_parallelism(),
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32))


def _test_indices(count, views, *, segment_seed, presampled, limits, where):
    if presampled:  # the client sent exactly the sampled frames, clip-major
        want = views.num_clips * views.num_frames
        count = guard(count, tf.equal(count, want),
                      f"{where}: this export takes exactly {want} frames per video (sampled by "
                      f"the client: {views.num_clips} clip(s) x {views.num_frames}); frames:",
                      [count])
        return tf.reshape(tf.range(count), [views.num_clips, views.num_frames])
    count = _check_frame_count(count, count, limits, where)
    return eval_indices(count, views, segment_seed=segment_seed)


def decode_work(encoded, views, *, limits=None, presampled=False, where="video"):
    """What decoding the test views (`views`) of `encoded` (N,) JPEGs costs, from headers and
    bytes only: int64 sum over the distinct sampled frames of height x width x scans (a
    progressive scan is one more pass over every coefficient; DCT scaling does not shorten
    entropy decoding). Runs the same format, byte and scan checks as `eval_views`."""
    limits = limits or NO_LIMITS
    idx = _test_indices(tf.shape(encoded)[0], views, segment_seed=None, presampled=presampled,
                        limits=limits, where=where)
    unique, _ = tf.unique(tf.reshape(idx, [-1]))
    headers = _headers(encoded, unique, limits, where)
    headers = _check_frame_sizes(headers, headers[:, 0], headers[:, 1], unique, limits, where)
    h = tf.cast(tf.reshape(headers, [-1, 3]), tf.int64)
    return tf.reduce_sum(h[:, 0] * h[:, 1] * tf.maximum(h[:, 2], 1))


# --- whole test videos -------------------------------------------------------------------------

def eval_views_from_frames(frames, views, *, segment_seed=None, limits=None, presampled=False,
                           where="video"):
    """Decoded uint8 frames (N, H, W, 3) -> the test views of `views` (a `specs.EvalViews`),
    float32 (num_clips * num_crops, T, c, c, 3).

    Views are clip-major: view v = clip v // num_crops, crop v % num_crops. `segment_seed`:
    see `eval_indices`. `limits` (an `InputLimits`; None = no caps) are checked on the shape
    first; `presampled`: the video is exactly the sampled frames (num_clips * T, clip-major).
    """
    limits = limits or NO_LIMITS
    shape = tf.shape(frames)
    frames = _check_frame_sizes(frames, shape[1:2], shape[2:3], tf.zeros([1], tf.int32), limits,
                                where)
    idx = _test_indices(tf.shape(frames)[0], views, segment_seed=segment_seed,
                        presampled=presampled, limits=limits, where=where)
    return _views(lambda unique: _resized_frames(frames, unique, views.short_side), idx, views)


def eval_views(encoded, views, *, segment_seed=None, limits=None, presampled=False,
               where="video"):
    """Encoded JPEG frames (N,) -> the test views of `views`, as `eval_views_from_frames`.

    Only the sampled frames are read: their headers are checked against `limits` (format, bytes,
    scans, pixels, aspect ratio, one size per video) before any is decoded, then each distinct
    frame is decoded and resized on its own, so one full-size frame per decoding thread is
    alive at a time (`DECODE_PARALLELISM`), never the whole clip at full size.
    """
    limits = limits or NO_LIMITS
    idx = _test_indices(tf.shape(encoded)[0], views, segment_seed=segment_seed,
                        presampled=presampled, limits=limits, where=where)
    return _views(lambda unique: _resized_jpegs(encoded, unique, views.short_side, limits, where),
                  idx, views)


def _views(resized, idx, views):
    # Decode and resize each distinct frame once (all clips together), repeat frames only
    # after resizing (short videos), then crop per clip and normalize the crops.
    unique, position = tf.unique(tf.reshape(idx, [-1]))
    frames = resized(unique)
    frames = tf.cond(tf.equal(tf.size(unique), tf.size(position)), lambda: frames,
                     lambda: tf.gather(frames, position))
    clips = tf.split(frames, views.num_clips, axis=0) if views.num_clips > 1 else [frames]
    out = tf.concat([spatial_crops(c, views.crop, views.num_crops) for c in clips], axis=0)
    return tf.ensure_shape(normalize(out), [views.num_views, *views.view_shape])
