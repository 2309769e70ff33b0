"""Reading one video (PyAV) or one folder of frames into resized JPEG frames, for the shard builder.

Runs in worker processes: PyAV, Pillow and numpy, no TensorFlow ops; files are opened through
tf.io.gfile (fileio), so a video may be on gs://, s3://, ram://, ... as well as on the local disk
(PyAV and Pillow read from the gfile handle; nothing is copied to a local file).

Frame policy (stated in the manifest's build params):
  * short side resized to `short_side` with Pillow's bilinear filter, never upscaled;
  * `fps=None` keeps every decoded frame; `fps=F` resamples by timestamp, output frame k shows the
    frame on screen at time t0 + k / F (the latest frame with pts <= that time);
  * `start`/`end` (seconds) keep only that time range (Kinetics clips cut from full videos);
  * JPEG at `jpeg_quality`, RGB.
"""
import io

import numpy as np

from vov3d_tf import fileio
from vov3d_tf.data.format import JPEG_QUALITY, SHORT_SIDE

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class VideoError(Exception):
    """A video that cannot be used; the message is the reason stored in the manifest."""


def output_size(width, height, short_side):
    """(w, h) with the short side = short_side (never upscaled), long side rounded."""
    short = min(width, height)
    if short_side is None or short <= short_side:
        return width, height
    scale = short_side / short
    if width <= height:
        return short_side, max(1, int(round(height * scale)))
    return max(1, int(round(width * scale))), short_side


def encode_image(image, size, jpeg_quality):
    """PIL image -> JPEG bytes at `size` (w, h), RGB."""
    from PIL import Image
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=jpeg_quality)
    return buf.getvalue()


def read_video(path, *, short_side=SHORT_SIDE, fps=None, start=None, end=None,
               jpeg_quality=JPEG_QUALITY):
    """JPEG frames of a video file (list of bytes); raises VideoError with the reason."""
    frames, _ = read_video_with_rate(path, short_side=short_side, fps=fps, start=start, end=end,
                                     jpeg_quality=jpeg_quality)
    return frames


def read_video_with_rate(path, *, short_side=SHORT_SIDE, fps=None, start=None, end=None,
                         jpeg_quality=JPEG_QUALITY):
    """(JPEG frames, stored frame rate): the rate is `fps` when resampling, else the stream's
    average frame rate (None if the container does not give one)."""
    info = {}
    frames = [jpeg for _, jpeg in iter_video(path, short_side=short_side, fps=fps, start=start,
                                             end=end, jpeg_quality=jpeg_quality, info=info)]
    return frames, info["stored_rate"]


def iter_video(path, *, short_side=SHORT_SIDE, fps=None, start=None, end=None,
               jpeg_quality=JPEG_QUALITY,
               info=None):
    """The frames `read_video` returns, decoded as they are iterated: (time, JPEG bytes) pairs,
    time in seconds from the first kept frame (`k / fps` when resampling). `info`, a dict, gets
    "stored_rate" (as `read_video_with_rate`) once the video is open. Raises VideoError with the
    reason, also for a failure mid-stream. One pass; memory is one frame (and the one on screen
    while resampling), whatever the video's length."""
    import av
    if not fileio.exists(path):
        raise VideoError("file not found")
    if fileio.getsize(path) == 0:
        raise VideoError("empty file (0 bytes)")
    handle = fileio.open(path, "rb")  # local, gs://, ram://, ...: PyAV reads the gfile handle
    try:
        container = av.open(handle)
    except Exception as e:  # noqa: BLE001  (PyAV raises many error types; all mean "unreadable")
        handle.close()
        raise VideoError(f"cannot open: {type(e).__name__}: {e}") from None
    emitted = 0
    try:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        native = stream.average_rate or stream.guessed_rate
        rate = float(native or 30)
        if info is not None:
            info["stored_rate"] = float(fps) if fps is not None else (
                round(float(native), 3) if native else None)
        if start:
            # Seek to the keyframe before `start`; frames before it are skipped by time below.
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        size = None
        step = None if fps is None else 1.0 / fps
        t0, k, prev, prev_jpeg, last_t = None, 0, None, None, None

        def encode(frame):
            nonlocal size
            image = frame.to_image()
            if size is None:
                size = output_size(image.width, image.height, short_side)
            return encode_image(image, size, jpeg_quality)

        for i, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else i / rate
            if end is not None and t >= end:
                break
            if start is not None and t < start:
                prev = frame  # on screen at `start` if the next frame comes later
                continue
            if step is None:
                t0 = t if t0 is None else t0
                emitted += 1
                yield t - t0, encode(frame)
            else:
                if t0 is None:
                    t0 = start if (start is not None and prev is not None) else t
                # Output frame k shows the latest frame with pts <= t0 + k / fps.
                while prev is not None and t0 + k * step < t:
                    if prev_jpeg is None:
                        prev_jpeg = encode(prev)  # encoded once, however often it repeats
                    emitted += 1
                    yield k * step, prev_jpeg
                    k += 1
                prev_jpeg = None
            prev, last_t = frame, t
        if step is not None and prev is not None and last_t is not None:
            stop = end if end is not None else last_t + 1.0 / rate
            t0 = last_t if t0 is None else t0
            while t0 + k * step < stop:
                if prev_jpeg is None:
                    prev_jpeg = encode(prev)
                emitted += 1
                yield k * step, prev_jpeg
                k += 1
    except VideoError:
        raise
    except Exception as e:  # noqa: BLE001
        raise VideoError(f"decoding failed after {emitted} frames: {type(e).__name__}: "
                         f"{e}") from None
    finally:
        container.close()
        handle.close()
    if not emitted:
        where = f" in [{start}, {end}) s" if start is not None else ""
        raise VideoError("no frames decoded" + where)


def read_frame_folder(path, *, short_side=SHORT_SIDE, jpeg_quality=JPEG_QUALITY):
    """JPEG frames of a folder of images, in file-name order; JPEGs that need no resize are kept
    byte-for-byte."""
    from PIL import Image
    if not fileio.isdir(path):
        raise VideoError("frame folder not found")
    names = sorted(n for n in fileio.listdir(path) if n.lower().endswith(FRAME_EXTENSIONS))
    if not names:
        raise VideoError("frame folder has no images")
    frames, size = [], None
    for name in names:
        file = fileio.join(path, name)
        try:
            raw = fileio.read_bytes(file)
            image = Image.open(io.BytesIO(raw))
            image.load()
        except Exception as e:  # noqa: BLE001
            raise VideoError(f"cannot read frame {name}: {type(e).__name__}: {e}") from None
        if size is None:
            size = output_size(image.width, image.height, short_side)
        if image.format == "JPEG" and image.mode == "RGB" and image.size == size:
            frames.append(raw)
        else:
            frames.append(encode_image(image, size, jpeg_quality))
    return frames


def frames_shape(jpeg):
    """(h, w) of a JPEG (for tests and reports)."""
    from PIL import Image
    w, h = Image.open(io.BytesIO(jpeg)).size
    return h, w


def decode(jpeg):
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
