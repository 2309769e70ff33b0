"""Importing vov3d_tf changes nothing in the process; `runtime.configure()` applies the TF
settings before the first tensor, and says so when it comes too late."""
import json
import os
import subprocess
import sys

PROBE = r"""
import json, os, sys, warnings
before = dict(os.environ)
import vov3d_tf, keras
from vov3d_tf import _compat
out = {"env_changed": sorted(k for k in os.environ if os.environ.get(k) != before.get(k)),
       "started_by_import": _compat.tensorflow_runtime_started()}
if sys.argv[1] == "late":
    import tensorflow as tf
    tf.zeros([2])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out["settings"] = vov3d_tf.runtime.configure()
out["warnings"] = [str(w.message) for w in caught]
out["flag"] = os.environ.get("TF_CPU_ALLOCATOR_USE_BFC")
print(json.dumps(out))
"""


def _probe(mode):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPU_ALLOCATOR_USE_BFC", "TF_ENABLE_ONEDNN_OPTS")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_has_no_side_effects_and_configure_applies_in_time():
    out = _probe("first")
    assert out["env_changed"] == [] and out["started_by_import"] is False
    assert out["flag"] == "true" and out["settings"]["cpu_allocator_bfc"] is True
    assert out["warnings"] == []
    assert isinstance(out["settings"]["onednn"], bool)


def test_configure_after_the_first_tensor_warns_and_changes_nothing():
    out = _probe("late")
    assert out["flag"] is None and out["settings"]["cpu_allocator_bfc"] is False
    assert len(out["warnings"]) == 1 and "first tensor" in out["warnings"][0]
