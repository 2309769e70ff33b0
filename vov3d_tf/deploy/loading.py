"""A trained model from a file: what export, predict, LiteRT and the benchmarks start from.

    model = load_trained_model("runs/demo/best.keras")          # a VideoClassifier
    model = load_trained_model("w.weights.h5", cfg.model)       # weights for the config's model

A `.keras` file carries its architecture; a `.weights.h5` file needs the config's `model`
section. Errors name the file and what does not fit.
"""
import keras

from vov3d_tf import fileio
from vov3d_tf.adapters import model_from_config
from vov3d_tf.model.networks import VideoClassifier

__all__ = ["load_trained_model"]


def load_trained_model(weights, model_cfg=None):
    """Model for export from `weights`: a `.keras` file (architecture included; its class count
    must equal `model_cfg.num_classes` when a config is given) or a `.weights.h5` file for the
    config's architecture.
    """
    weights = str(weights)
    if not fileio.exists(weights):
        raise FileNotFoundError(f"weights file not found: {weights}")
    if weights.endswith(".keras"):
        model = keras.models.load_model(weights, compile=False)
        if not isinstance(model, VideoClassifier):
            raise ValueError(f"{weights}: expected a vov3d_tf VideoClassifier, got "
                             f"{type(model).__name__}")
        if model_cfg is not None and model.num_classes != model_cfg.num_classes:
            raise ValueError(f"{weights}: the model has {model.num_classes} classes but the "
                             f"config's model.num_classes is {model_cfg.num_classes} (fix the "
                             f"config or pass --set model.num_classes={model.num_classes})")
        return model
    if weights.endswith(".weights.h5"):
        if model_cfg is None:
            raise ValueError(f"{weights}: a .weights.h5 file needs the config's architecture; "
                             f"pass a .keras model")
        model = model_from_config(model_cfg)
        try:
            model.load_weights(weights)
        except ValueError as e:  # Keras' message names the layer and shapes, not the file
            raise ValueError(f"{weights}: does not fit the config's model ({model_cfg.name}, "
                             f"model.num_classes={model_cfg.num_classes}): "
                             f"{' '.join(str(e).split())[:400]}") from None
        return model
    raise ValueError(f"{weights}: expected a .keras model or a .weights.h5 file")
