"""What the data pipeline, evaluation, predict and the serving graph are asked to make.

    TrainClip     one training clip: frames, temporal sampling, random short-side scale, crop, flip
    EvalViews     the multi-view test: frames, sampling, short-side resize, crop, clips x crops
    ReadOptions   how shards are read: record keys, corrupt records, shuffling, parallelism

Frozen and checked when made, so a wrong value is an error naming the field before any data is
read, and a parameter that does not apply cannot be passed (a training clip has no test crop, a
test view no random flip). `EvalViews` is the one description of the test views: the evaluation
pipeline (`pipeline.eval_dataset`), `predict`, the exported serving graph (`ServingSpec.views`)
and the config adapter (`vov3d_tf.adapters.eval_views`) all take it, so they cannot drift.

The defaults are the paper's Something-Something recipe, the config's defaults
(`vov3d_tf.config.DataConfig` / `EvalConfig`, docs/architecture.md#training-recipe); the
Kinetics recipe (dense sampling at stride 5, flip, 10 clips) is configs/k400.json.
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional

from vov3d_tf.config import NUM_CROPS, ON_CORRUPT, SAMPLING_MODES, DataConfig, EvalConfig
from vov3d_tf.data import format as fmt

__all__ = ["TrainClip", "EvalViews", "ReadOptions", "check_crop_size"]

_DATA, _EVAL = DataConfig(), EvalConfig()  # the paper's recipe: the config's defaults
AUTOTUNE = -1  # tf.data.AUTOTUNE


def check_crop_size(short_side, crop_size, where):
    """A square crop must fit in the frames' short side."""
    if short_side < crop_size:
        raise ValueError(f"{where}: short side {short_side} is smaller than crop_size {crop_size}")


def _positive_ints(spec, *names):
    for name in names:
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(spec).__name__}.{name} must be a positive int, got {value!r}")


def _check_sampling(spec):
    if spec.sampling not in SAMPLING_MODES:
        raise ValueError(f"{type(spec).__name__}.sampling must be one of "
                         f"{', '.join(SAMPLING_MODES)}, got {spec.sampling!r}")
    if spec.sampling == "segment" and spec.sampling_rate != 1:
        raise ValueError(f"{type(spec).__name__}.sampling_rate applies to dense sampling only; "
                         f"use 1 with segment sampling, got {spec.sampling_rate}")


@dataclass(frozen=True)
class TrainClip:
    """One augmented training clip (T, crop, crop, 3): `num_frames` frames sampled by
    `sampling` (one random frame per segment, or a random dense window at `sampling_rate`), the
    short side scaled to a random size in `short_side_range` (inverse-uniform: round(1 /
    U(1/max, 1/min)), the Something-Something configs), a random `crop_size` square, and a
    horizontal flip with p = 0.5 when `random_flip` (off for Something-Something)."""
    num_frames: int = _DATA.num_frames
    crop_size: int = _DATA.crop_size
    sampling: str = _DATA.sampling
    sampling_rate: int = _DATA.sampling_rate
    short_side_range: tuple = _DATA.train_short_side
    inverse_uniform: bool = _DATA.inverse_uniform_scale
    random_flip: bool = _DATA.random_flip

    def __post_init__(self):
        _positive_ints(self, "num_frames", "crop_size", "sampling_rate")
        _check_sampling(self)
        lo_hi = tuple(self.short_side_range)
        if (len(lo_hi) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                   for v in lo_hi) or lo_hi[0] > lo_hi[1]):
            raise ValueError(f"TrainClip.short_side_range must be [min, max] positive ints with "
                             f"min <= max, got {self.short_side_range!r}")
        object.__setattr__(self, "short_side_range", lo_hi)
        check_crop_size(lo_hi[0], self.crop_size, "TrainClip.short_side_range")


@dataclass(frozen=True)
class EvalViews:
    """The multi-view test: each video gives `num_clips` clips of `num_frames` frames
    (segment positions (k + 0.5) / num_clips, or evenly spaced dense windows), resized to
    `short_side`, and `num_crops` square crops of each (centre; or left/centre/right along the
    long side): `num_views` = clips x crops views of (T, crop, crop, 3), clip-major.
    `crop_size` None crops the whole short side (the reference's test crop)."""
    num_frames: int = _DATA.num_frames
    short_side: int = _DATA.test_short_side
    crop_size: Optional[int] = _DATA.test_crop_size
    sampling: str = _DATA.sampling
    sampling_rate: int = _DATA.sampling_rate
    num_clips: int = _EVAL.num_clips
    num_crops: int = _EVAL.num_crops

    def __post_init__(self):
        _positive_ints(self, "num_frames", "short_side", "sampling_rate", "num_clips")
        if self.crop_size is not None:
            _positive_ints(self, "crop_size")
        _check_sampling(self)
        if self.num_crops not in NUM_CROPS:
            raise ValueError(f"EvalViews.num_crops must be one of {NUM_CROPS}, got "
                             f"{self.num_crops!r}")
        check_crop_size(self.short_side, self.crop, "EvalViews.short_side")

    @property
    def crop(self):
        """The test crop's side: `crop_size`, or the short side when it is None."""
        return self.short_side if self.crop_size is None else self.crop_size

    @property
    def num_views(self):
        return self.num_clips * self.num_crops

    @property
    def view_shape(self):
        """(T, crop, crop, 3): one view, the model's input clip."""
        return (self.num_frames, self.crop, self.crop, 3)

    def single_view(self):
        """The same test with one clip and the centre crop (what a single-view export serves)."""
        return dataclasses.replace(self, num_clips=1, num_crops=1)


@dataclass(frozen=True)
class ReadOptions:
    """How shards are read. `image_key` / `label_key`: the records' feature list of JPEG frames
    and context int64 class indices (this project's, Model Garden's and DMVR's by default; set
    them for shards written by other tools). `on_corrupt`: a record that cannot be parsed or
    decoded is skipped, reported with its file and index and counted (`skip`), or an error
    naming them (`fail`). `shuffle_buffer`: records held for shuffling in training (each a whole
    video's JPEGs). `deterministic`: element order reproducible (None: with a seed, or at eval).
    `num_parallel_calls`: records decoded at once (AUTOTUNE: up to one per core; each holds its
    output, e.g. 377 MB for 30 test views at 256). `prefetch`: batches prepared ahead (None:
    AUTOTUNE in training, 1 at eval)."""
    image_key: str = fmt.IMAGE_KEY
    label_key: str = fmt.LABEL_INDEX_KEY
    on_corrupt: str = "skip"
    shuffle_buffer: int = 64
    deterministic: Optional[bool] = None
    num_parallel_calls: int = AUTOTUNE
    prefetch: Optional[int] = None

    def __post_init__(self):
        if self.on_corrupt not in ON_CORRUPT:
            raise ValueError(f"ReadOptions.on_corrupt must be one of {', '.join(ON_CORRUPT)}, "
                             f"got {self.on_corrupt!r}")
        for name in ("image_key", "label_key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"ReadOptions.{name} must be a non-empty string, got "
                                 f"{getattr(self, name)!r}")
        _positive_ints(self, "shuffle_buffer")
        if self.num_parallel_calls != AUTOTUNE:
            _positive_ints(self, "num_parallel_calls")
