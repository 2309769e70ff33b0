"""Every use of a private API of Keras, Keras Tuner or TensorFlow, in one place.

Each helper says what it reaches, why no public API does it, and the versions it was checked
against: keras 3.15.1, keras-tuner 1.4.8, tensorflow 2.21.0 (setup.cfg bounds keras and
keras-tuner below their next minor release, so a release that moves these fails at install,
not silently at run time). When a bound is raised, re-check every entry here; the tests that
exercise them are named per entry.
"""

# ----------------------------------------------------------------------------------------------
# Keras
# ----------------------------------------------------------------------------------------------

def flatten_layers(model):
    """Every layer inside `model`, nested ones included, without `model` itself.

    `Model.layers` lists only the top level; Keras has no public recursive walk.
    `Layer._flatten_layers(include_self=False)`: checked with keras 3.15.1 (tests: test_train
    weight decay / SyncBN, test_eval precise BN).
    """
    return list(model._flatten_layers(include_self=False))


def build_fit_state(model, element_spec):
    """Build the compiled loss/metrics of `model` for batches of `element_spec` now, and make
    `fit` skip its own build step.

    Keras 3 builds them inside `fit` with a `strategy.reduce` that MultiWorkerMirroredStrategy
    cannot do (tensorflow#72388); there is no public build-metrics call. `Model._symbolic_build`
    and `Trainer._maybe_symbolic_build`: checked with keras 3.15.1 (test: test_train_multiworker).
    Call inside the strategy's scope.
    """
    model._symbolic_build(data_batch=element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


# ----------------------------------------------------------------------------------------------
# Keras Tuner
# ----------------------------------------------------------------------------------------------

def has_chief_oracle():
    """True when KERASTUNER_* variables describe a chief + workers setup.

    `keras_tuner.src.distribute.utils` is not exported by the public `keras_tuner` package.
    checked with keras-tuner 1.4.8 (test: test_search_distributed).
    """
    from keras_tuner.src.distribute import utils
    return utils.has_chief_oracle()


def is_chief_oracle():
    """True in the process that runs the oracle (KERASTUNER_TUNER_ID=chief). See above."""
    from keras_tuner.src.distribute import utils
    return utils.is_chief_oracle()


def mark_tried(oracle, values):
    """Record `values` as tried, so the oracle never proposes them again (a rejected
    over-budget candidate). `Oracle._tried_so_far` / `_compute_values_hash`: the only record of
    proposed points; checked with keras-tuner 1.4.8 (test: test_search budget rejection)."""
    oracle._tried_so_far.add(oracle._compute_values_hash(values))


def is_tried(oracle, values):
    """Whether the oracle already proposed (or was told to skip) `values`.
    `Oracle._duplicate`: checked with keras-tuner 1.4.8."""
    return oracle._duplicate(values)


def next_seed(oracle):
    """A fresh seed from the oracle's own reproducible counter (saved with its state).
    `Oracle._seed_state`: checked with keras-tuner 1.4.8."""
    oracle._seed_state += 1
    return oracle._seed_state


class RandomProposalFilter:
    """Oracle mixin: every random proposal passes through `self.filter_random_proposal`.

    Random search, Bayesian optimisation's initial points and Hyperband's brackets all draw
    through `Oracle._random_values`, the one private hook where a proposal can be replaced
    before it becomes a trial (keras-tuner has no public candidate filter). keras-tuner
    1.4.7-1.4.8 (tests: test_search, test_search_e2e).
    """

    def _random_values(self):
        return self.filter_random_proposal(super()._random_values)

    def random_proposal(self):
        """A random proposal of the oracle, filtered."""
        return self._random_values()

    def filter_random_proposal(self, propose):
        """`propose()` -> values or None; override to reject/replace proposals."""
        return propose()


# ----------------------------------------------------------------------------------------------
# TensorFlow
# ----------------------------------------------------------------------------------------------

def tensorflow_runtime_started():
    """Whether TensorFlow has created its eager context (devices and their allocators).

    The CPU allocator choice is read then; no public call asks without starting it
    (`tf.config.list_logical_devices` would). `context.context()._initialized`:
    checked with tensorflow 2.21.0 (test: test_runtime).
    """
    import sys
    if "tensorflow" not in sys.modules:
        return False
    from tensorflow.python.eager import context
    return bool(context.context()._initialized)


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels and fusions in this process.

    TF decides once, when it loads (TF_ENABLE_ONEDNN_OPTS, else its per-CPU default); it is
    only exposed through `_pywrap_util_port.IsMklEnabled`: checked with tensorflow 2.21.0
    (test: test_runtime).
    """
    from tensorflow.python.util import _pywrap_util_port
    return bool(_pywrap_util_port.IsMklEnabled())
