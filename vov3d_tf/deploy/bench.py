"""Throughput and peak memory of the models on this machine, optionally beside the PyTorch peer.

    vov3d-bench                                  # every model, 224 and 160, b1/b8/train b8
    vov3d-bench --models vov3d_m --sizes 224 --peer torch_peer.py
    vov3d-bench --models vov3d_m --sizes 224 --batches 1 --train-batch 0 \
        --runtimes litert,litert-int8 --peer torch_peer.py --openvino

Prints one JSON line per case: clips/s from the median (and the fastest) of `--runs` timed calls
after `--warmup` untimed ones, the peak RSS of the process that ran it, the RSS of a process
that only imports the framework, and their difference (`working_mb`). Every case runs in a
fresh process. Inference runs the documented inference paths (`--runtimes`):
  tf      `fold_batchnorm(model)` called inside a `tf.function` (what evaluation, predict and the
          exported SavedModel run);
  litert  the same folded model converted by `vov3d_tf.deploy.lite` for the case's fixed input
          shape,
          run by the LiteRT interpreter (XNNPACK) in a process that never imports TensorFlow;
  litert-fp16, litert-dynamic, litert-int8  the same, converted with `--quantize fp16 / dynamic
          / int8` (int8 calibrated on --calibration-shards, else on random clips).
`--eval-shards` adds an accuracy line (`vov3d_tf.deploy.lite.compare` against float32 LiteRT);
`--openvino` (with --peer) also times the PyTorch twin in OpenVINO, default precision and f32.
A training step (TensorFlow) is forward + backward + SGD (Nesterov, weight decay) update of the
trainable model. With `--peer`, each case also runs the PyTorch twin right after ours, and a
`"ratio"` line gives ours / peer for clips/s and peak RSS. Benchmark on a quiet machine.
"""
import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

from vov3d_tf import runtime

CASE_FLAG = "--run-case"
# Inference runtimes: TensorFlow, and the LiteRT conversions (vov3d_tf.deploy.lite) by quantization.
LITERT_QUANTIZE = {"litert": None, "litert-fp16": "fp16", "litert-dynamic": "dynamic",
                   "litert-int8": "int8"}
RUNTIMES = ("tf", *LITERT_QUANTIZE)


def run_case(case):
    """Time one case in this process; returns a dict (no RSS: the parent measures it)."""
    import numpy as np
    import tensorflow as tf

    from vov3d_tf.model.inference import fold_batchnorm

    threads = case.get("threads")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    b, t, s = case["batch"], case["frames"], case["size"]
    model = _model(case)
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
        folded = fold_batchnorm(model)
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


def _model(case):
    """The case's model: its `weights` (.keras) when given, else freshly initialized."""
    from vov3d_tf.model.networks import create_model

    if case.get("weights"):
        from vov3d_tf.deploy.loading import load_trained_model
        return load_trained_model(case["weights"])
    return create_model(case["model"], case["num_classes"])


def _calibration(case):
    """int8 calibration clips: eval views of `calibration_shards`, else random normal clips
    (enough for timing; accuracy figures need real calibration data)."""
    import numpy as np

    from vov3d_tf.deploy import lite

    if case.get("calibration_shards"):
        return lite.EvalClips(case["calibration_shards"], _views(case),
                              max_clips=case["calibration_clips"])
    rng = np.random.default_rng(0)
    shape = (case["frames"], case["size"], case["size"], 3)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(8)]


def _views(case, num_clips=None):
    """The eval views of a case: its frames and size, segment sampling, `num_clips` x 3."""
    from vov3d_tf.data.specs import EvalViews

    views = EvalViews(num_frames=case["frames"], short_side=case["size"])
    return dataclasses.replace(views, num_clips=num_clips) if num_clips else views


def convert_case(case, path):
    """Write the folded model of an inference case as a fixed-shape .tflite file, quantized as
    its runtime says."""
    from vov3d_tf.deploy import lite

    quantize = LITERT_QUANTIZE[case["runtime"]]
    lite.save_tflite(_model(case), path, frames=case["frames"], height=case["size"],
                     batch_size=case["batch"], quantize=quantize,
                     calibration=_calibration(case) if quantize == "int8" else None)


def accuracy_case(case, paths):
    """`vov3d_tf.deploy.lite.compare` of the converted models {runtime: path} against the float32
    LiteRT model on the eval views of `case["eval_shards"]`."""
    from vov3d_tf.deploy import lite

    clips = lite.EvalClips(case["eval_shards"],
                           _views(case, num_clips=case.get("eval_num_clips")))
    return lite.compare(paths["litert"], {r: p for r, p in paths.items() if r != "litert"},
                        clips, max_videos=case.get("eval_videos"),
                        num_threads=case["threads"] or None)


# The timing loop both framework-only children share (after they define `step()`): `b`, `med`,
# `best` for their JSON line.
_TIMING_LOOP = """
for _ in range(case["warmup"]):
    step()
times = []
for _ in range(case["runs"]):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
b, med, best = case["batch"], float(np.median(times)), float(np.min(times))
"""

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
""" + _TIMING_LOOP + """print(json.dumps({"median_s": round(med, 4), "min_s": round(best, 4),
                  "clips_per_s": round(b / med, 3), "best_clips_per_s": round(b / best, 3)}))
"""


# OpenVINO on the PyTorch peer: converted (torch + openvino) to an IR file in one process,
# timed in another that imports only openvino, like the LiteRT case.
_OPENVINO_CONVERT = """
import json, runpy, sys
import openvino as ov
import torch
case = json.loads(sys.argv[1])
peer = runpy.run_path(case["peer"])  # not as __main__: defines the model, runs nothing
torch.manual_seed(0)
model = peer["VoV3D"](case["model"], case["num_classes"])
peer["init_like_reference"](model)
x = torch.randn(case["batch"], 3, case["frames"], case["size"], case["size"])
ov.save_model(ov.convert_model(model.eval(), example_input=x), case["xml"], compress_to_fp16=False)
print("{}")
"""

_OPENVINO_CASE = """
import json, sys, time
import numpy as np
import openvino as ov
case = json.loads(sys.argv[1])
config = {"INFERENCE_NUM_THREADS": case["threads"]}
if case["precision"] != "default":
    config["INFERENCE_PRECISION_HINT"] = case["precision"]
compiled = ov.Core().compile_model(case["xml"], "CPU", config)
request = compiled.create_infer_request()
x = np.random.default_rng(0).standard_normal(
    (case["batch"], 3, case["frames"], case["size"], case["size"]), dtype=np.float32)
def step():
    return request.infer({0: x})
""" + _TIMING_LOOP + """print(json.dumps({"median_s": round(med, 4), "min_s": round(best, 4),
                  "clips_per_s": round(b / med, 3), "best_clips_per_s": round(b / best, 3),
                  "inference_precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
                  "openvino": ov.__version__}))
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
                for name in args.runtimes:
                    yield {"model": model, "mode": "infer", "batch": batch, "size": size,
                           "runtime": name}
            if args.train_batch:
                yield {"model": model, "mode": "train", "batch": args.train_batch, "size": size,
                       "runtime": "tf"}


def _tflite_path(case, tmp, runtime=None):
    return os.path.join(tmp, "{model}_{size}_b{batch}_".format(**case)
                        + (runtime or case["runtime"]) + ".tflite")


def _run_ours(case, tmp):
    """(result, peak RSS MiB) of one of our cases, each in a fresh process."""
    if case["runtime"] == "tf":
        return _spawn("import sys; from vov3d_tf.deploy.bench import main; "
                      "sys.exit(main(sys.argv[1:]))", [CASE_FLAG, json.dumps(case)])
    path = _tflite_path(case, tmp)
    result, _ = _spawn("import json, sys; from vov3d_tf.deploy.bench import convert_case; "
                       "convert_case(json.loads(sys.argv[1]), sys.argv[2]); print('{}')",
                       [json.dumps(case), path])
    if "error" in result:
        return {"error": "conversion failed: " + result["error"]}, None
    threads = case["threads"] or os.cpu_count() or 1
    return _spawn(_LITERT_CASE, [json.dumps({**case, "tflite": path, "threads": threads})])


def _emit(line):
    print(json.dumps(line), flush=True)


def _ratio_line(ours, peer, base, peer_base, against):
    rss, peer_rss = ours.get("peak_rss_mb"), peer.get("peak_rss_mb")
    if "error" in ours or "error" in peer or not rss or not peer_rss:
        return None
    return {"ratio": f"vov3d_tf / {against}", **{k: ours[k] for k in (
        "runtime", "model", "mode", "batch", "size")},
        "clips_per_s": round(ours["clips_per_s"] / peer["clips_per_s"], 2),
        "peak_rss": round(rss / peer_rss, 2),
        "working_memory": round((rss - base) / (peer_rss - peer_base), 2)}


def _run_peer(args, case, peer_base):
    cmd = ["--model", case["model"], "--batch", str(case["batch"]), "--frames",
           str(args.frames), "--size", str(case["size"]), "--num-classes", str(args.num_classes),
           "--runs", str(args.runs), "--threads", str(args.threads or os.cpu_count())]
    peer, peer_rss = _spawn(_run_script(os.path.abspath(args.peer)),
                            cmd + (["--train"] if case["mode"] == "train" else []))
    return {"impl": "pytorch_peer", **{k: case[k] for k in (
        "model", "mode", "batch", "frames", "size")}, **peer, "peak_rss_mb": peer_rss,
        "import_rss_mb": peer_base, "working_mb": peer_rss and round(peer_rss - peer_base, 1)}


def _run_openvino(args, case, tmp, ov_base):
    """OpenVINO on the PyTorch peer's model in its default CPU precision and in f32."""
    xml = os.path.join(tmp, "{model}_{size}_b{batch}_openvino.xml".format(**case))
    ov_case = {**case, "peer": os.path.abspath(args.peer), "xml": xml,
               "threads": args.threads or os.cpu_count() or 1}
    converted, _ = _spawn(_OPENVINO_CONVERT, [json.dumps(ov_case)])
    lines = []
    for precision in ("default", "f32"):
        if "error" in converted:
            result, rss = {"error": "conversion failed: " + converted["error"]}, None
        else:
            result, rss = _spawn(_OPENVINO_CASE, [json.dumps({**ov_case,
                                                              "precision": precision})])
        lines.append({"impl": "openvino_peer", "precision": precision, **{k: case[k] for k in (
            "model", "mode", "batch", "frames", "size")}, **result, "peak_rss_mb": rss,
            "import_rss_mb": ov_base, "working_mb": rss and round(rss - ov_base, 1)})
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(prog="vov3d-bench", description=__doc__,
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
                   help="inference runtimes: " + ", ".join(RUNTIMES) + " (default: tf, litert; "
                        "tf alone when the LiteRT runtime is not installed)")
    p.add_argument("--threads", type=int, default=0,
                   help="TF / LiteRT threads (0: TF default, all cores for LiteRT)")
    p.add_argument("--weights", help="a .keras model to time (and convert) instead of a freshly "
                                     "initialized one; needs a single --models entry, its name")
    p.add_argument("--calibration-shards", metavar="GLOB",
                   help="litert-int8: calibrate on these shards' eval views (default: random "
                        "clips, fine for timing only)")
    p.add_argument("--calibration-clips", type=int, default=200, metavar="N")
    p.add_argument("--eval-shards", metavar="GLOB",
                   help="after timing, compare each quantized LiteRT model with the float32 one "
                        "on these shards' eval views (top-1/top-5, top-1 agreement)")
    p.add_argument("--eval-videos", type=int, default=None, metavar="N")
    p.add_argument("--eval-num-clips", type=int, default=None, metavar="N",
                   help="eval clips per video (x 3 crops; default 2, segment sampling)")
    p.add_argument("--peer", help="path of torch_peer.py to run beside each case")
    p.add_argument("--openvino", action="store_true",
                   help="with --peer: also run the peer's model in OpenVINO (default precision "
                        "and f32); needs `pip install openvino`")
    p.add_argument(CASE_FLAG, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    if args.run_case:
        print(json.dumps(run_case(json.loads(args.run_case))))
        return 0
    from vov3d_tf.model.networks import MODEL_NAMES
    bad = [m for m in args.models if m not in MODEL_NAMES]
    if bad:
        p.error(f"unknown model(s) {bad}; allowed: {', '.join(MODEL_NAMES)}")
    if args.runs < 5:
        p.error("--runs must be >= 5 (the reported figure is a median)")
    if args.runtimes is None:
        args.runtimes = ["tf", "litert"]
        if importlib.util.find_spec("ai_edge_litert") is None:
            args.runtimes = ["tf"]
            print("vov3d_tf.deploy.bench: LiteRT is not installed (pip install -e '.[lite]'): "
                  "timing the TensorFlow runtime only", file=sys.stderr)
    bad = [r for r in args.runtimes if r not in RUNTIMES]
    if bad or not args.runtimes:
        p.error(f"unknown runtime(s) {bad}; allowed: {', '.join(RUNTIMES)}")
    litert = [r for r in args.runtimes if r in LITERT_QUANTIZE]
    if litert and importlib.util.find_spec("ai_edge_litert") is None:
        p.error(f"--runtimes {','.join(litert)} needs the LiteRT runtime: pip install -e "
                f"'.[lite]' (or pass --runtimes tf)")
    if args.weights:
        if len(args.models) != 1:
            p.error("--weights times one model: pass its name as the only --models entry")
        if not os.path.exists(args.weights):
            p.error(f"--weights file not found: {args.weights}")
    if args.eval_shards and ("litert" not in args.runtimes or len(litert) < 2):
        p.error("--eval-shards compares quantized LiteRT runtimes with litert: pass --runtimes "
                "with litert and at least one of litert-fp16, litert-dynamic, litert-int8")
    if args.openvino and not args.peer:
        p.error("--openvino runs OpenVINO on the PyTorch peer: pass --peer torch_peer.py too")
    if args.openvino and importlib.util.find_spec("openvino") is None:
        print("vov3d_tf.deploy.bench: --openvino skipped: OpenVINO is not installed (pip install "
              "openvino; it is a comparison, not a dependency of vov3d_tf)", file=sys.stderr)
        args.openvino = False
    failed = 0
    # Working memory = peak RSS minus the RSS of importing the framework alone: TensorFlow's
    # libraries are ~450 MiB larger than PyTorch's before any tensor exists.
    bases = {"tf": baseline_rss("vov3d_tf")}
    if litert:
        bases.update(dict.fromkeys(litert, baseline_rss("numpy, ai_edge_litert.interpreter")))
    peer_base = baseline_rss("torch") if args.peer else None
    ov_base = baseline_rss("numpy, openvino") if args.openvino else None
    tmp = tempfile.TemporaryDirectory(prefix="vov3d_bench_")
    shared = dict(frames=args.frames, num_classes=args.num_classes, runs=args.runs,
                  warmup=args.warmup, threads=args.threads, weights=args.weights,
                  calibration_shards=args.calibration_shards,
                  calibration_clips=args.calibration_clips, eval_shards=args.eval_shards,
                  eval_videos=args.eval_videos, eval_num_clips=args.eval_num_clips)
    group = []  # our inference lines of one (model, size, batch), for the peers' ratio lines

    def finish_group():
        if not group:
            return
        case = group[0][0]
        if args.eval_shards:
            paths = {c["runtime"]: _tflite_path(c, tmp.name) for c, _ in group
                     if c["runtime"] in LITERT_QUANTIZE}
            acc, _ = _spawn("import json, sys; from vov3d_tf.deploy.bench import accuracy_case; "
                            "print(json.dumps(accuracy_case(json.loads(sys.argv[1]), "
                            "json.loads(sys.argv[2]))))", [json.dumps(case), json.dumps(paths)])
            _emit({"accuracy": "quantized LiteRT vs litert (float32)", "eval_shards":
                   args.eval_shards, **{k: case[k] for k in ("model", "batch", "size")},
                   **({"error": acc["error"]} if "error" in acc else
                      {"litert" if k == "reference" else k: v for k, v in acc.items()})})
        if args.peer:
            peer = _run_peer(args, case, peer_base)
            _emit(peer)
            for c, ours in group:
                ratio = _ratio_line(ours, peer, bases[c["runtime"]], peer_base, "pytorch_peer")
                if ratio:
                    _emit(ratio)
        if args.openvino:
            for line in _run_openvino(args, case, tmp.name, ov_base):
                _emit(line)
                for c, ours in group:
                    ratio = _ratio_line(ours, line, bases[c["runtime"]], ov_base,
                                        f"openvino_peer ({line['precision']})")
                    if ratio:
                        _emit(ratio)
        group.clear()

    for case in cases(args):
        case.update(shared)
        if group and (case["mode"] == "train" or any(case[k] != group[0][0][k] for k in (
                "model", "size", "batch"))):
            finish_group()
        result, rss = _run_ours(case, tmp.name)
        base = bases[case["runtime"]]
        ours = {"impl": "vov3d_tf", **{k: case[k] for k in ("runtime", "model", "mode", "batch",
                                                             "frames", "size")},
                **result, "peak_rss_mb": rss, "import_rss_mb": base,
                "working_mb": rss and round(rss - base, 1)}
        _emit(ours)
        failed += "error" in result
        if case["mode"] == "infer":
            group.append((case, ours))
        elif args.peer:
            peer = _run_peer(args, case, peer_base)
            _emit(peer)
            ratio = _ratio_line(ours, peer, base, peer_base, "pytorch_peer")
            if ratio:
                _emit(ratio)
    finish_group()
    tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
