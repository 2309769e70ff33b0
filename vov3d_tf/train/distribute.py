"""tf.distribute for a run: the strategy, who is the chief, where a worker writes, SyncBN.

One process trains on all local GPUs (MirroredStrategy; the CPU when there are none); several
machines run the same command with TF_CONFIG set (MultiWorkerMirroredStrategy). Every worker
saves (saving reads synchronised variables), but only the chief writes the real paths.
"""
import json
import os

import keras
import tensorflow as tf

from vov3d_tf import _compat

__all__ = ["select_strategy", "is_chief", "worker_path", "use_synchronized_batchnorm",
           "build_for_multi_worker"]


def select_strategy():
    """MultiWorkerMirroredStrategy when TF_CONFIG names a cluster, else MirroredStrategy
    over the local GPUs (the CPU when there are none)."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    if tf_config.get("cluster"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_path(path, strategy):
    """Where this worker writes `path`: the chief writes the real path, the others a temporary
    sibling (every worker must save, since saving reads synchronised variables)."""
    if is_chief(strategy):
        return path
    resolver = strategy.cluster_resolver
    return os.path.join(os.path.dirname(path) or ".", f".worker_{resolver.task_type}_"
                        f"{resolver.task_id}", os.path.basename(path))


def use_synchronized_batchnorm(model):
    """Compute BN batch statistics over all replicas (SyncBN) in every BN layer of `model`.

    The flag is read when traced, so setting it before the first train step equals building
    with `synchronized=True`; `vov3d_tf.model.layers.BatchNorm` then all-reduces the statistics with
    the fused BN's numbers (two-pass variance, unbiased moving variance). The saved model
    config is unchanged (inference does not use batch statistics).
    """
    n = 0
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            n += 1
    return n


def build_for_multi_worker(model, strategy, element_spec):
    """Work around Keras 3's fit() under MultiWorkerMirroredStrategy (tensorflow#72388).

    Keras reduces with `strategy.reduce("MEAN", value, axis=0)`, which this strategy cannot do
    for the (x, y) tuple it uses to build the loss/metrics, nor for the scalar logs of each
    train step. So: build the loss and metrics here from the element spec and skip Keras'
    build step, and return each step's logs as shape (1,) (the MEAN over axis 0 of the
    per-worker values is then their average, a scalar). Training math is unchanged.
    """
    with strategy.scope():
        _compat.build_fit_state(model, element_spec)
    train_step = model.train_step

    def train_step_with_rank1_logs(data):
        return {k: tf.reshape(v, [1]) for k, v in train_step(data).items()}
    model.train_step = train_step_with_rank1_logs
