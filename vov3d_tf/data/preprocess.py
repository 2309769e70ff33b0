"""Pure TensorFlow preprocessing: temporal sampling, decoding, resizing, cropping, normalization.

Every function here is graph-safe (no Python control flow on tensor values), so the same code
runs in the tf.data training pipeline, in evaluation, in `predict` and inside the exported
serving graph: what is served is exactly what was measured.

The recipe is PySlowFast's, as used by the official VoV3D configs (ARCHITECTURE.md section 12):
  * Something-Something: segment sampling, T equal segments, one frame each (random in training,
    segment centre at test); no horizontal flip (left/right is in the labels);
  * Kinetics: dense sampling, T frames at a stride (5 at 30 fps), a random window in training and
    N evenly spaced windows at test; random horizontal flip;
  * training: short side ~ U[256, 320] (or inverse-uniform, the SS configs), random 224 crop;
    test: short side 256, three 256 crops (left/centre/right or top/centre/bottom);
  * pixels / 255, then (x - 0.45) / 0.225, RGB.
Randomness is stateless: every random function takes a `seed` int32/int64 tensor of shape (2,),
so a pipeline is reproducible whatever its parallelism.
"""
import tensorflow as tf

MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)

# Paper defaults (ARCHITECTURE.md section 12).
TRAIN_SCALE_RANGE = (256, 320)
TEST_SHORT_SIDE = 256
CROP_SIZE = 224
SAMPLING_MODES = ("segment", "dense")
NUM_CROPS = (1, 3)  # test crops per clip: the centre, or left/centre/right (uniform_crop)


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
    return tf.clip_by_value(tf.cast(idx, tf.int32), 0, tf.maximum(tf.cast(num_video_frames, tf.int32) - 1, 0))


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
    """Decodes only the frames at `indices` (each distinct frame once): uint8 (len(indices), H, W, 3).

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
    """Bilinear (half-pixel centres = align_corners False) resize of (T, H, W, C) frames: float32."""
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


def check_crop_size(short_side, crop_size, where):
    if short_side < crop_size:
        raise ValueError(f"{where}: short side {short_side} is smaller than crop_size {crop_size}")


# --- whole clips ---------------------------------------------------------------------------------

def train_clip(encoded, *, num_frames, crop_size=CROP_SIZE, sampling="segment", sampling_rate=1,
               scale_range=TRAIN_SCALE_RANGE, inverse_uniform=False, flip=False, seed):
    """Encoded frames (N,) -> one augmented training clip, float32 (num_frames, c, c, 3)."""
    check_crop_size(min(scale_range), crop_size, "train_clip scale_range")
    s_time, s_scale, s_crop, s_flip = _split_seed(seed, 4)
    idx = sample_indices(tf.shape(encoded)[0], num_frames, sampling=sampling,
                         sampling_rate=sampling_rate, training=True, seed=s_time)
    size = random_short_side(scale_range, inverse_uniform=inverse_uniform, seed=s_scale)
    shape = tf.io.extract_jpeg_shape(encoded[0])
    # Decode only the window the crop shows, normalize it (linear, so it commutes with bilinear
    # resizing; the window is usually smaller than the crop), resize it to the crop.
    window = random_resized_crop_window(shape[0], shape[1], crop_size, size, seed=s_crop)
    frames = normalize(decode_window(encoded, idx, window))
    frames = tf.image.resize(frames, [crop_size, crop_size], method="bilinear")
    if flip:
        frames = random_flip(frames, seed=s_flip)
    return tf.ensure_shape(frames, [num_frames, crop_size, crop_size, 3])


def eval_indices(num_video_frames, *, num_frames, sampling="segment", sampling_rate=1,
                 num_clips=1, segment_seed=None):
    """Frame indices of the test clips: int32 (num_clips, num_frames).

    With `segment_seed` (segment sampling, several clips) each clip draws one random frame per
    segment, the reference implementation's test protocol (ARCHITECTURE.md section 12),
    reproducibly; without it clip k takes position (k + 0.5) / num_clips in every segment.
    """
    if segment_seed is not None and sampling == "segment" and num_clips > 1:
        seeds = _split_seed(segment_seed, num_clips)
        return tf.stack([segment_indices(num_video_frames, num_frames, training=True, seed=s)
                         for s in seeds])
    return tf.stack([sample_indices(num_video_frames, num_frames, sampling=sampling,
                                    sampling_rate=sampling_rate, training=False, clip_index=c,
                                    num_clips=num_clips) for c in range(num_clips)])


def eval_views_from_frames(frames, *, num_frames, crop_size=TEST_SHORT_SIDE, sampling="segment",
                           sampling_rate=1, short_side=TEST_SHORT_SIDE, num_clips=1, num_crops=3,
                           segment_seed=None):
    """Decoded uint8 frames (N, H, W, 3) -> test views float32 (num_clips * num_crops, T, c, c, 3).

    Views are clip-major: view v = clip v // num_crops, crop v % num_crops. `segment_seed`:
    see `eval_indices`.
    """
    check_crop_size(short_side, crop_size, "eval views")
    idx = eval_indices(tf.shape(frames)[0], num_frames=num_frames, sampling=sampling,
                       sampling_rate=sampling_rate, num_clips=num_clips, segment_seed=segment_seed)
    return _views(lambda i: tf.gather(frames, i), idx, num_frames=num_frames, crop_size=crop_size,
                  short_side=short_side, num_clips=num_clips, num_crops=num_crops)


def eval_views(encoded, *, num_frames, crop_size=TEST_SHORT_SIDE, sampling="segment",
               sampling_rate=1, short_side=TEST_SHORT_SIDE, num_clips=1, num_crops=3,
               segment_seed=None):
    """Encoded frames (N,) -> test views, as `eval_views_from_frames`, decoding only sampled frames."""
    check_crop_size(short_side, crop_size, "eval views")
    idx = eval_indices(tf.shape(encoded)[0], num_frames=num_frames, sampling=sampling,
                       sampling_rate=sampling_rate, num_clips=num_clips, segment_seed=segment_seed)
    return _views(lambda i: decode_frames(encoded, i), idx, num_frames=num_frames,
                  crop_size=crop_size, short_side=short_side, num_clips=num_clips,
                  num_crops=num_crops)


def _views(take, idx, *, num_frames, crop_size, short_side, num_clips, num_crops):
    # Resize once over all clips' frames (each distinct frame decoded once), then crop per clip.
    frames = take(tf.reshape(idx, [-1]))
    frames = resize_short_side(frames, short_side)
    clips = tf.split(frames, num_clips, axis=0) if num_clips > 1 else [frames]
    views = tf.concat([spatial_crops(c, crop_size, num_crops) for c in clips], axis=0)
    views = normalize(views)
    return tf.ensure_shape(views, [num_clips * num_crops, num_frames, crop_size, crop_size, 3])
