"""TensorFlow's process settings for this model, as one explicit call every command makes first.

    import vov3d_tf
    vov3d_tf.runtime.configure()      # before the first TensorFlow tensor of the process

Importing `vov3d_tf` changes nothing in the process beyond registering the custom layers (it
loads TensorFlow and Keras but creates no tensor). `configure()` then:

* sets `TF_CPU_ALLOCATOR_USE_BFC=true` (unless the environment already sets it): TensorFlow's
  default CPU allocator returns every freed buffer to the OS, so each op of a video network
  (tens of MB per activation) page-faults its output in again; the BFC pool allocator reuses
  them (measured 2-5x faster element-wise ops and convs). TensorFlow reads the flag when it
  creates its CPU device, at the first tensor: calling `configure()` after that warns and
  changes nothing.
* reports oneDNN. TensorFlow 2.21 reads `TF_ENABLE_ONEDNN_OPTS` once, when it loads, and on
  Linux turns oneDNN on by default for CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX (the
  x86 CPU measured in the README has AVX512_VNNI and AVX512_BF16: on). A library function runs
  after TensorFlow has loaded, so it cannot change this; set the variable in the environment
  of the process to override TensorFlow's choice.

Returns {"cpu_allocator_bfc": bool, "onednn": bool} (what the process will run with).
"""
import os
import warnings

from vov3d_tf import _compat

__all__ = ["configure", "ALLOCATOR_FLAG"]

ALLOCATOR_FLAG = "TF_CPU_ALLOCATOR_USE_BFC"
_TRUE = ("1", "true")


def configure():
    """Apply the process settings above; safe to call more than once."""
    if _compat.tensorflow_runtime_started():
        if os.environ.get(ALLOCATOR_FLAG) is None:
            warnings.warn(f"vov3d_tf.runtime.configure() was called after TensorFlow created "
                          f"its first tensor: {ALLOCATOR_FLAG} cannot take effect any more "
                          f"(call it first, or set {ALLOCATOR_FLAG}=true in the environment)",
                          RuntimeWarning, stacklevel=2)
    else:
        os.environ.setdefault(ALLOCATOR_FLAG, "true")
    return {"cpu_allocator_bfc": os.environ.get(ALLOCATOR_FLAG, "").lower() in _TRUE,
            "onednn": _compat.onednn_enabled()}
