"""Throughput and peak memory of the models on this machine, optionally beside the PyTorch peer.

    python -m vov3d_tf.bench                                  # every model, 224 and 160, b1/b8/train b8
    python -m vov3d_tf.bench --models vov3d_m --sizes 224 --peer ../shared/bench/torch_peer.py

Prints one JSON line per case: clips/s from the median (and the fastest) of `--runs` timed calls
after `--warmup` untimed ones, the peak RSS of the process that ran it, the RSS of a process
that only imports the framework, and their difference (`working_mb`). Every case runs in a
fresh process. Inference runs the documented inference paths (`--runtimes`):
  tf      `fold_batchnorm(model)` called inside a `tf.function` (what evaluation, predict and the
          exported SavedModel run);
  litert  the same folded model converted by `vov3d_tf.lite` for the case's fixed input shape,
          run by the LiteRT interpreter (XNNPACK) in a process that never imports TensorFlow.
A training step (TensorFlow) is forward + backward + SGD (Nesterov, weight decay) update of the
trainable model. With `--peer`, each case also runs the PyTorch twin right after ours, and a
`"ratio"` line gives ours / peer for clips/s and peak RSS. Benchmark on a quiet machine.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

from vov3d_tf import runtime

CASE_FLAG = "--run-case"
RUNTIMES = ("tf", "litert")


def run_case(case):
    """Time one case in this process; returns a dict (no RSS: the parent measures it)."""
    import numpy as np
    import tensorflow as tf

    import vov3d_tf

    threads = case.get("threads")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    b, t, s = case["batch"], case["frames"], case["size"]
    model = vov3d_tf.create_model(case["model"], case["num_classes"])
    x = tf.random.stateless_normal((b, t, s, s, 3), seed=(0, 0))
    if case["mode"] == "train":
        import keras
        y = tf.constant(np.arange(b) % case["num_classes"], tf.int32)
        opt = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True, weight_decay=5e-5)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss
    else:
        folded = vov3d_tf.fold_batchnorm(model)
        del model  # serve the folded copy only
        import gc
        gc.collect()

        @tf.function
        def step():
            return folded(x, training=False)
    for _ in range(case["warmup"]):
        step().numpy()
    times = []
    for _ in range(case["runs"]):
        start = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - start)
    med, best = float(np.median(times)), float(np.min(times))
    return {"median_s": round(med, 4), "min_s": round(best, 4),
            "clips_per_s": round(b / med, 3), "best_clips_per_s": round(b / best, 3)}


def convert_case(case, path):
    """Write the folded model of an inference case as a fixed-shape .tflite file."""
    import vov3d_tf
    from vov3d_tf import lite

    model = vov3d_tf.create_model(case["model"], case["num_classes"])
    lite.save_tflite(model, path, frames=case["frames"], height=case["size"],
                     batch_size=case["batch"])


# The LiteRT case runs from this source alone (no vov3d_tf import, hence no TensorFlow).
_LITERT_CASE = """
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
case = json.loads(sys.argv[1])
interpreter = Interpreter(model_path=case["tflite"], num_threads=case["threads"])
interpreter.allocate_tensors()
detail = interpreter.get_input_details()[0]
x = np.random.default_rng(0).standard_normal(tuple(detail["shape"]), dtype=np.float32)
out = interpreter.get_output_details()[0]["index"]
def step():
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(out)
for _ in range(case["warmup"]):
    step()
times = []
for _ in range(case["runs"]):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
b, med, best = case["batch"], float(np.median(times)), float(np.min(times))
print(json.dumps({"median_s": round(med, 4), "min_s": round(best, 4),
                  "clips_per_s": round(b / med, 3), "best_clips_per_s": round(b / best, 3)}))
"""


HWM_PREFIX = "VMHWM_KB "
# Printed by every child at exit: the high-water RSS of its own address space. (The rusage of
# a child is no good here: Linux carries the parent's RSS at fork into the child's ru_maxrss.)
_HWM_HOOK = ("import atexit, sys\n"
             "def _hwm():\n"
             "    kb = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
             "    print('" + HWM_PREFIX + "' + kb[0], file=sys.stderr, flush=True)\n"
             "atexit.register(_hwm)\n")


def _spawn(code, args=()):
    """Run Python `code` with argv `args` in a fresh process.

    Returns (last JSON line it printed, its peak RSS in MiB).
    """
    proc = subprocess.run([sys.executable, "-c", _HWM_HOOK + code, *args],
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    hwm = [line for line in proc.stderr.splitlines() if line.startswith(HWM_PREFIX)]
    rss = round(int(hwm[-1][len(HWM_PREFIX):]) / 1024, 1) if hwm else None
    if proc.returncode != 0 or not lines:
        err = [l for l in proc.stderr.splitlines() if not l.startswith(HWM_PREFIX)]
        return {"error": (err or ["no output"])[-1], "returncode": proc.returncode}, rss
    return json.loads(lines[-1]), rss


def _run_script(path):
    return ("import runpy, sys\n"
            f"sys.argv = [{path!r}] + sys.argv[1:]\n"
            f"runpy.run_path({path!r}, run_name='__main__')\n")


def baseline_rss(module):
    """Peak RSS (MiB) of a process that only imports `module`: its framework's fixed cost."""
    _, rss = _spawn(f"import {module}; print('{{}}')")
    return rss


def cases(args):
    for model in args.models:
        for size in args.sizes:
            for batch in args.batches:
                for runtime in args.runtimes:
                    yield {"model": model, "mode": "infer", "batch": batch, "size": size,
                           "runtime": runtime}
            if args.train_batch:
                yield {"model": model, "mode": "train", "batch": args.train_batch, "size": size,
                       "runtime": "tf"}


def _run_ours(case, tmp):
    """(result, peak RSS MiB) of one of our cases, each in a fresh process."""
    if case["runtime"] == "tf":
        return _spawn("import sys; from vov3d_tf.bench import main; "
                      "sys.exit(main(sys.argv[1:]))", [CASE_FLAG, json.dumps(case)])
    path = os.path.join(tmp, "{model}_{size}_b{batch}.tflite".format(**case))
    result, _ = _spawn("import json, sys; from vov3d_tf.bench import convert_case; "
                       "convert_case(json.loads(sys.argv[1]), sys.argv[2]); print('{}')",
                       [json.dumps(case), path])
    if "error" in result:
        return {"error": "conversion failed: " + result["error"]}, None
    threads = case["threads"] or os.cpu_count() or 1
    return _spawn(_LITERT_CASE, [json.dumps({**case, "tflite": path, "threads": threads})])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vov3d_tf.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=lambda s: s.split(","),
                   default=["vov3d_m", "vov3d_l", "x3d_m", "x3d_l"])
    p.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[224, 160])
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8])
    p.add_argument("--train-batch", type=int, default=8, help="0 skips the training step")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--num-classes", type=int, default=174)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runtimes", type=lambda s: s.split(","), default=None,
                   help="inference runtimes: tf, litert (default: both; tf alone when the "
                        "LiteRT runtime is not installed)")
    p.add_argument("--threads", type=int, default=0,
                   help="TF / LiteRT threads (0: TF default, all cores for LiteRT)")
    p.add_argument("--peer", help="path of torch_peer.py to run beside each case")
    p.add_argument(CASE_FLAG, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    if args.run_case:
        print(json.dumps(run_case(json.loads(args.run_case))))
        return 0
    from vov3d_tf.models import MODEL_NAMES
    bad = [m for m in args.models if m not in MODEL_NAMES]
    if bad:
        p.error(f"unknown model(s) {bad}; allowed: {', '.join(MODEL_NAMES)}")
    if args.runs < 5:
        p.error("--runs must be >= 5 (the reported figure is a median)")
    if args.runtimes is None:
        args.runtimes = ["tf", "litert"]
        if importlib.util.find_spec("ai_edge_litert") is None:
            args.runtimes = ["tf"]
            print("vov3d_tf.bench: LiteRT is not installed (pip install -e '.[lite]'): "
                  "timing the TensorFlow runtime only", file=sys.stderr)
    bad = [r for r in args.runtimes if r not in RUNTIMES]
    if bad or not args.runtimes:
        p.error(f"unknown runtime(s) {bad}; allowed: {', '.join(RUNTIMES)}")
    if "litert" in args.runtimes and importlib.util.find_spec("ai_edge_litert") is None:
        p.error("--runtimes litert needs the LiteRT runtime: pip install -e '.[lite]' "
                "(or pass --runtimes tf)")
    failed = 0
    # Working memory = peak RSS minus the RSS of importing the framework alone: TensorFlow's
    # libraries are ~450 MiB larger than PyTorch's before any tensor exists.
    bases = {"tf": baseline_rss("vov3d_tf")}
    if "litert" in args.runtimes:
        bases["litert"] = baseline_rss("numpy, ai_edge_litert.interpreter")
    peer_base = baseline_rss("torch") if args.peer else None
    tmp = tempfile.TemporaryDirectory(prefix="vov3d_bench_")
    for case in cases(args):
        case.update(frames=args.frames, num_classes=args.num_classes, runs=args.runs,
                    warmup=args.warmup, threads=args.threads)
        result, rss = _run_ours(case, tmp.name)
        base = bases[case["runtime"]]
        ours = {"impl": "vov3d_tf", **{k: case[k] for k in ("runtime", "model", "mode", "batch",
                                                             "frames", "size")},
                **result, "peak_rss_mb": rss, "import_rss_mb": base,
                "working_mb": rss and round(rss - base, 1)}
        print(json.dumps(ours), flush=True)
        failed += "error" in result
        if args.peer:
            cmd = ["--model", case["model"], "--batch",
                   str(case["batch"]), "--frames", str(args.frames), "--size",
                   str(case["size"]), "--num-classes", str(args.num_classes),
                   "--runs", str(args.runs), "--threads", str(args.threads or os.cpu_count())]
            peer, peer_rss = _spawn(_run_script(os.path.abspath(args.peer)),
                                    cmd + (["--train"] if case["mode"] == "train" else []))
            print(json.dumps({"impl": "pytorch_peer", **{k: ours[k] for k in (
                "model", "mode", "batch", "frames", "size")}, **peer,
                "peak_rss_mb": peer_rss, "import_rss_mb": peer_base,
                "working_mb": peer_rss and round(peer_rss - peer_base, 1)}), flush=True)
            if "error" not in result and "error" not in peer and rss and peer_rss:
                print(json.dumps({"ratio": "vov3d_tf / pytorch_peer", **{k: ours[k] for k in (
                    "runtime", "model", "mode", "batch", "size")},
                    "clips_per_s": round(ours["clips_per_s"] / peer["clips_per_s"], 2),
                    "peak_rss": round(rss / peer_rss, 2),
                    "working_memory": round((rss - base) / (peer_rss - peer_base), 2)}),
                    flush=True)
    tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
