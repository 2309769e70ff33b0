"""vov3d-tf: VoV3D (T-OSA + D(2+1)D) and X3D video classifiers in Keras 3 / TensorFlow.

Importing the package loads TensorFlow and Keras and registers the custom layers, so
`keras.models.load_model` reads `.keras` files written by it. That is its only effect: it sets
no environment variable and creates no tensor. The TensorFlow process settings the README's
speed figures use are one explicit call, made first by every command here::

    import vov3d_tf
    vov3d_tf.runtime.configure()      # before the first tensor (vov3d_tf/runtime.py)
"""
from vov3d_tf.model import layers  # noqa: F401  (registers the custom layers)
from vov3d_tf import runtime  # noqa: F401  (vov3d_tf.runtime.configure)
from vov3d_tf.model.networks import MODEL_NAMES, VARIANTS, VideoClassifier, create_model
from vov3d_tf.model.inference import fold_batchnorm

__all__ = ["MODEL_NAMES", "VARIANTS", "VideoClassifier", "create_model", "fold_batchnorm",
           "runtime"]
__version__ = "0.1.0"
