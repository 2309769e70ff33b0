"""Long videos as a stream: frames decoded one at a time, and sliding windows over them.

`iter_frames` yields the frames of a video file (local, gs://, ram://, ...: read through
`fileio`) exactly as `video_io.read_video` returns them (the shard builder's frame policy: short
side resized with Pillow's bilinear filter, optional resampling to `fps` by timestamp, JPEG at
`jpeg_quality`), each with its time in seconds from the first frame, without ever holding more
than the current frame.

`sliding_windows` groups such a stream into windows `[start, start + window)` starting every
`stride` seconds (from 0, the first frame). It keeps only the frames of the window being filled
(a deque), so memory is bounded by the window length, not by the video. A window is emitted
once a frame at or after its end arrives; after the last frame, the first window reaching past
the end of the video is emitted too (it is shorter), so every frame of the video lies in some
window when `stride <= window`. Windows that would hold no frame are skipped.
"""
import collections
import dataclasses
import itertools

from vov3d_tf.data.format import JPEG_QUALITY, SHORT_SIDE
from vov3d_tf.data.video_io import iter_video

__all__ = ["Window", "iter_frames", "sliding_windows", "WindowStream"]

# Frame times are pts * time_base in float; a frame within this many seconds of a window
# boundary counts as on it.
_EPS = 1e-6


@dataclasses.dataclass
class Window:
    """One window of a video: `frames` are JPEG bytes (shard format), times in seconds."""
    index: int
    start: float
    end: float
    frames: list


def iter_frames(path, *, short_side=SHORT_SIDE, fps=None, jpeg_quality=JPEG_QUALITY):
    """(time in seconds from the first frame, JPEG bytes) for every frame `read_video(path,
    short_side=, fps=, jpeg_quality=)` returns, in order, decoding as it goes (the shard
    builder's own reader, `video_io.iter_video`).

    Raises `VideoError` with the reason (as `read_video`), also for a failure mid-stream.
    """
    return iter_video(path, short_side=short_side, fps=fps, jpeg_quality=jpeg_quality)


class WindowStream:
    """Iterable of `Window`s over a (time, frame) stream; see the module docstring.

    After iteration: `num_frames` (frames seen), `duration` (seconds: last frame time + one
    frame), `max_buffered` (most frames held at once, the memory bound: the frames of one
    window).
    """

    def __init__(self, frames, *, window, stride, frame_duration=None):
        for name, value in (("window", window), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self._frames = frames
        self.window = float(window)
        self.stride = float(stride)
        self._frame_duration = frame_duration
        self.num_frames = 0
        self.duration = 0.0
        self.max_buffered = 0

    def peek(self):
        """The first (time, frame) of the stream, taken now (an unreadable video fails here with
        its `VideoError`) and kept for the iteration, so nothing is decoded twice; None for an
        empty stream."""
        frames = iter(self._frames)
        first = next(frames, None)
        self._frames = frames if first is None else itertools.chain([first], frames)
        return first

    def _start(self, j):
        return j * self.stride if j else 0.0  # (an infinite stride: one window)

    def __iter__(self):
        buf = collections.deque()  # (time, frame) of window j, oldest first
        j, last_emitted, prev_t, gap = 0, None, None, None
        for t, frame in self._frames:
            self.num_frames += 1
            if prev_t is not None and t > prev_t:
                gap = t - prev_t
            prev_t = t
            while t >= self._start(j) + self.window - _EPS:  # window j is complete
                if buf:
                    last_emitted = j
                    yield Window(j, self._start(j), self._start(j) + self.window,
                                 [f for _, f in buf])
                j += 1
                while buf and buf[0][0] < self._start(j) - _EPS:
                    buf.popleft()
            if t >= self._start(j) - _EPS:
                buf.append((t, frame))
                self.max_buffered = max(self.max_buffered, len(buf))
        if prev_t is None:
            return
        self.duration = prev_t + (self._frame_duration or gap or 0.0)
        covered = (self._start(last_emitted) + self.window if last_emitted is not None else None)
        if buf and (covered is None or buf[-1][0] >= covered - _EPS):
            yield Window(j, self._start(j), min(self._start(j) + self.window, self.duration),
                         [f for _, f in buf])


def sliding_windows(path, *, window, stride, short_side=SHORT_SIDE, fps=None,
                    jpeg_quality=JPEG_QUALITY):
    """`WindowStream` of the video at `path` (frames as `iter_frames` gives them)."""
    frame_duration = None if fps is None else 1.0 / fps
    return WindowStream(iter_frames(path, short_side=short_side, fps=fps,
                                    jpeg_quality=jpeg_quality),
                        window=window, stride=stride, frame_duration=frame_duration)
