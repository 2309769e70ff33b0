"""CPU inference through LiteRT (TensorFlow Lite): the fastest and smallest way to run a model.

    python -m vov3d_tf.lite runs/demo/best.keras --output vov3d.tflite --frames 16 --size 224

writes a float32 `.tflite` file of the BN-folded model for one fixed input shape
`(batch, frames, size, size, 3)` (normalized frames, as the Keras model takes; logits out).
Run it with the LiteRT runtime alone, `pip install ai-edge-litert` (~40 MB with its deps; it does
not import TensorFlow):

    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path="vov3d.tflite", num_threads=2)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], clips)  # float32
    interpreter.invoke()
    logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

Why: a process that imports TensorFlow holds ~650 MiB before the first tensor (its libraries),
while LiteRT with XNNPACK needs ~35 MiB and plans every activation buffer ahead, so a whole
VoV3D-M 16x224x224 inference peaks at ~195 MiB at batch 1 (see README for the measured figures).
Outputs equal the Keras model's to float32 rounding (tested against the official logits).
Fixed shapes: convert once per deployed clip shape and batch size; `--batch 0` keeps the batch
dimension dynamic (resize it with `interpreter.resize_tensor_input`), which is slower.
"""
import argparse
import os
import sys

from vov3d_tf import runtime


def to_tflite(model, *, frames=16, height=224, width=None, batch_size=1):
    """Float32 `.tflite` bytes of `model` (a `VideoClassifier`; BN is folded first) for inputs
    `(batch_size, frames, height, width, 3)`. `batch_size=None` leaves the batch dynamic."""
    import keras
    import tensorflow as tf

    from vov3d_tf.inference import fold_batchnorm
    from vov3d_tf.models import _check_positive_ints

    width = height if width is None else width
    for name, value in (("frames", frames), ("height", height), ("width", width),
                        ("batch_size", batch_size)):
        if value is not None:
            _check_positive_ints(name, value)
    folded = fold_batchnorm(model)
    inputs = keras.Input((frames, height, width, 3), batch_size=batch_size, name="clips")
    wrapper = keras.Model(inputs, folded(inputs, training=False), name=folded.name)
    converter = tf.lite.TFLiteConverter.from_keras_model(wrapper)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no TF fallback
    return converter.convert()


def save_tflite(model, path, **shape):
    """`to_tflite(model, **shape)` written to `path` (folders created); returns the path."""
    blob = to_tflite(model, **shape)
    from vov3d_tf import fileio
    path = os.fspath(path)
    fileio.makedirs(fileio.dirname(fileio.abspath(path)))
    fileio.atomic_write_bytes(path, blob)  # never a half-written model under the final name
    return path


def run_tflite(path_or_bytes, clips, *, num_threads=None):
    """Logits of a `.tflite` model (path or bytes) for float32 `clips`, via LiteRT.

    The input batch must match the converted one unless it was converted with a dynamic batch.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {"num_threads": num_threads or os.cpu_count() or 1}
    if isinstance(path_or_bytes, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(path_or_bytes), **kwargs)
    else:
        interpreter = Interpreter(model_path=os.fspath(path_or_bytes), **kwargs)
    detail = interpreter.get_input_details()[0]
    clips = np.ascontiguousarray(clips, dtype=np.float32)
    expected = [int(d) for d in detail["shape_signature"]]
    if len(expected) != clips.ndim or any(e not in (-1, c) for e, c in zip(expected, clips.shape)):
        raise ValueError(f"clips of shape {tuple(clips.shape)} do not fit the model's input "
                         f"{tuple(expected)} (-1: any); convert it for this shape")
    if list(detail["shape"]) != list(clips.shape):
        interpreter.resize_tensor_input(detail["index"], list(clips.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], clips)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vov3d_tf.lite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help=".keras model written by train.py or vov3d_tf.convert")
    p.add_argument("--output", required=True, help="the .tflite file to write")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224, help="crop height and width")
    p.add_argument("--batch", type=int, default=1, help="clips per call (0: dynamic batch)")
    args = p.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    from vov3d_tf.serving import load_trained_model

    try:
        model = load_trained_model(args.weights)
        path = save_tflite(model, args.output, frames=args.frames, height=args.size,
                           batch_size=args.batch or None)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    shape = (args.batch or "dynamic", args.frames, args.size, args.size, 3)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB): input {shape} float32 "
          f"normalized frames -> {model.num_classes} logits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
