"""vov3d-tf: VoV3D (T-OSA + D(2+1)D) and X3D video classifiers in Keras 3 / TensorFlow.

Importing the package registers its custom layers, so `keras.models.load_model` reads
`.keras` files written by it.
"""
from vov3d_tf import layers  # noqa: F401  (registers the custom layers)
from vov3d_tf.models import MODEL_NAMES, VARIANTS, VideoClassifier, create_model
from vov3d_tf.inference import fold_batchnorm

__all__ = ["MODEL_NAMES", "VARIANTS", "VideoClassifier", "create_model", "fold_batchnorm"]
__version__ = "0.1.0"
