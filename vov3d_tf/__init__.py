"""vov3d-tf: VoV3D (T-OSA + D(2+1)D) and X3D video classifiers in Keras 3 / TensorFlow.

Importing the package registers its custom layers, so `keras.models.load_model` reads
`.keras` files written by it.
"""
import os

# TensorFlow's default CPU allocator returns every freed buffer to the OS, so each op of a
# video network (tens of MB per activation) page-faults its output in again: measured 2-5x
# slower element-wise ops and convs than with TF's BFC pool allocator. The flag is read when
# TF allocates its first tensor, so it works if set before any tensor exists; set
# TF_CPU_ALLOCATOR_USE_BFC=false to opt out.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
# oneDNN kernels and fusions (off by default in this TF build): ~20% less CPU time per clip on
# this model, measured. Read when TensorFlow loads, so it only applies if `vov3d_tf` is imported
# first; set TF_ENABLE_ONEDNN_OPTS=0 to opt out.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from vov3d_tf import layers  # noqa: E402,F401  (registers the custom layers)
from vov3d_tf.models import MODEL_NAMES, VARIANTS, VideoClassifier, create_model  # noqa: E402
from vov3d_tf.inference import fold_batchnorm  # noqa: E402

__all__ = ["MODEL_NAMES", "VARIANTS", "VideoClassifier", "create_model", "fold_batchnorm"]
__version__ = "0.1.0"
