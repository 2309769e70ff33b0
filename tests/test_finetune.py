"""Fine-tuning and the LR policies: model.init_weights (.keras and official .npz), the classifier
re-initialised for a new class count, errors naming layers and shapes, train.freeze through a
real training run, the optimizer-form guard on resume, and the step LR policy's numbers."""
import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import vov3d_tf
from vov3d_tf.config import config_from_dict
from vov3d_tf.train import finetune, optim, rundir, training
from vov3d_tf.train.optim import WarmupStepsDecay

TINY = dict(base_width=8, num_conv=2, blocks=(1, 1, 1, 1), dropout_rate=0.0)


def _source(tmp_path, classes=3, seed=1):
    """A tiny VoV3D saved as .keras, weights randomised (so nothing equals a fresh init)."""
    model = vov3d_tf.create_model("vov3d_m", classes, **TINY)
    rng = np.random.default_rng(seed)
    model.set_weights([(w * (1 + 0.05 * rng.normal(size=w.shape))
                        + 0.01 * rng.normal(size=w.shape)).astype("float32")
                       for w in model.get_weights()])
    path = str(tmp_path / "source.keras")
    model.save(path)
    return model, path


def test_keras_source_loads_exactly_and_new_classes_reinitialise_the_classifier(tmp_path):
    src, path = _source(tmp_path)
    model = vov3d_tf.create_model("vov3d_m", 5, **TINY)
    fresh = model.get_layer("head_projection").get_weights()
    lines = []
    report = finetune.load_initial_weights(model, path, log=lines.append)
    for layer in model.layers:
        if layer.weights and layer.name != "head_projection":
            for a, b in zip(layer.get_weights(), src.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)  # bit-exact
    kernel, bias = model.get_layer("head_projection").get_weights()
    np.testing.assert_array_equal(kernel, fresh[0])  # the fresh N(0, 0.01^2) init, bias 0
    assert kernel.shape == (2048, 5) and 0.005 < kernel.std() < 0.015 and not bias.any()
    assert report["reinitialized"] == ["head_projection"]
    assert report["loaded"] == len(model.weights) - 2
    assert len(report["loaded_layers"]) == len([l for l in model.layers if l.weights]) - 1
    assert "head_projection" not in report["loaded_layers"]
    assert report["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest() and len(report["sha256"]) == 64
    assert "re-initialised head_projection (num_classes differs: 3 -> 5)" in lines[0]


def test_other_mismatches_are_errors_naming_layers_and_shapes(tmp_path):
    _, path = _source(tmp_path)
    wider = vov3d_tf.create_model("vov3d_m", 3, **dict(TINY, base_width=16))
    with pytest.raises(ValueError) as e:
        finetune.load_initial_weights(wider, path)
    msg = str(e.value)
    assert "mis-shaped layer(s)" in msg and "stem_conv_xy: checkpoint [(3, 3, 3, 4)], model " \
        "[(3, 3, 3, 8)]" in msg
    deeper = vov3d_tf.create_model("vov3d_m", 3, **dict(TINY, blocks=(1, 1, 2, 1)))
    with pytest.raises(ValueError, match=r"1[0-9]* missing layer\(s\):\n  s4_b1_"):
        finetune.load_initial_weights(deeper, path)
    with pytest.raises(FileNotFoundError, match="model.init_weights"):
        finetune.load_initial_weights(deeper, str(tmp_path / "nope.keras"))


@pytest.mark.slow  # builds two full VoV3D-M models
def test_official_npz_source(parity_weights, tmp_path):
    path = tmp_path / "official.npz"
    np.savez(path, **parity_weights)  # the official VoV3D-M (10 classes)
    model = vov3d_tf.create_model("vov3d_m", 174)
    report = finetune.load_initial_weights(model, str(path), log=lambda _: None)
    assert report["reinitialized"] == ["head_projection"]
    official = parity_weights["s2.pathway0_res0.branch2.layers.1.a.1.running_var"]
    np.testing.assert_array_equal(model.get_layer("s2_b0_u1_a_bn").moving_variance.numpy(),
                                  official)
    np.testing.assert_array_equal(model.get_layer("stem_conv_t").kernel.numpy()[:, 0, :, 0],
                                  parity_weights["s1.pathway0_stem.conv.weight"][:, 0, :, 0, 0].T)


def test_freeze_selects_stages():
    model = vov3d_tf.create_model("vov3d_m", 3, **TINY)
    assert finetune.freeze(model, "none") == []
    frozen = finetune.freeze(model, "s3")
    assert frozen[0] == "stem_conv_xy" and all(n.startswith(("stem_", "s2_", "s3_"))
                                              for n in frozen)
    assert {v.path.split("/")[0] for v in model.trainable_variables} \
        .isdisjoint(frozen) and any(v.path.startswith("s4_") for v in model.trainable_variables)
    with pytest.raises(ValueError, match="train.freeze must be one of"):
        finetune.freeze(model, "s6")


def _data(n, classes=3, views=False):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4, 32, 32, 3)).astype(np.float32)
    y = (np.arange(n) % classes).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x[:, None] if views else x, y)).batch(4)


def _cfg(out, **train):
    model = {"name": "vov3d_m", "num_classes": 3, "base_width": 8, "num_conv": 2,
             "blocks": [1, 1, 1, 1], "dropout_rate": 0.0}
    t = {"batch_size": 4, "epochs": 1, "steps_per_epoch": 3, "base_lr": 0.2,
         "warmup_epochs": 0.0, "output_dir": str(out), "checkpoint_every_steps": 3,
         "precise_bn_batches": 2}
    init = train.pop("init_weights", None)
    t.update(train)
    return config_from_dict({"model": dict(model, init_weights=init), "train": t,
                             "eval": {"num_clips": 1, "num_crops": 1}})


@pytest.mark.slow  # a real training run (about a minute on 2 busy cores)
def test_freeze_backbone_run_trains_only_the_head(tmp_path):
    src, path = _source(tmp_path)
    out = tmp_path / "run"
    cfg = _cfg(out, init_weights=path, freeze="backbone")
    training.run(cfg, datasets=(_data(12).repeat(), _data(4, views=True)), verbose=0)
    import keras
    trained = keras.models.load_model(out / "last.keras", compile=False)
    head_changed = []
    for layer in trained.layers:
        if not layer.weights:
            continue
        same = all(np.array_equal(a, b) for a, b in
                   zip(layer.get_weights(), src.get_layer(layer.name).get_weights()))
        if layer.name.startswith("head_"):
            head_changed.append(not same)
        else:
            assert same, f"frozen layer {layer.name} changed"  # weights and BN statistics
    assert all(head_changed) and len(head_changed) == 4  # conv_5, conv_5_bn, lin_5, projection
    record = json.loads((out / "init_weights.json").read_text())
    assert record["path"] == os.path.abspath(path) and record["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()

    # A resume with the other optimizer form is refused, naming both forms.
    (out / "final_metrics.json").unlink()
    other = _cfg(out, init_weights=path, freeze="backbone", optimizer="keras", epochs=2)
    with pytest.raises(ValueError, match=r"written with the 'reference' optimizer form"):
        training.run(other, datasets=(_data(12).repeat(), _data(4, views=True)), verbose=0)


def test_freeze_s3_run_trains_stage_4_onward(tmp_path):  # 3 training steps, about 10 s
    # Freezing up to a stage: stem, s2 and s3 (weights and BN statistics) keep the source's
    # values; every layer with weights from s4 on trains.
    src, path = _source(tmp_path)
    out = tmp_path / "run"
    training.run(_cfg(out, init_weights=path, freeze="s3"),
                 datasets=(_data(12).repeat(), _data(4, views=True)), verbose=0)
    import keras
    trained = keras.models.load_model(out / "last.keras", compile=False)
    changed = {}
    for layer in trained.layers:
        if layer.weights:
            changed[layer.name] = not all(np.array_equal(a, b) for a, b in zip(
                layer.get_weights(), src.get_layer(layer.name).get_weights()))
    frozen = [n for n in changed if n.startswith(("stem_", "s2_", "s3_"))]
    free = [n for n in changed if n not in frozen]
    assert len(frozen) > 20 and len(free) > 20, (len(frozen), len(free))
    assert not any(changed[n] for n in frozen), [n for n in frozen if changed[n]]
    assert all(changed[n] for n in free), [n for n in free if not changed[n]]


def test_steps_with_relative_lrs_by_hand():
    # the K400 -> SSv2 fine-tune (architecture.md: training recipe): 0.05, x[1, 0.1, 0.01] from epochs [0, 35, 45], 50
    # epochs, 0.19-epoch warm-up from 1e-4; here 10 steps per epoch (warm-up: 2 steps)
    s = WarmupStepsDecay(0.05, 10, [0, 35, 45], [1, 0.1, 0.01], warmup_steps=2,
                         warmup_start_lr=1e-4)
    want = {0: 1e-4, 1: 1e-4 + (0.05 - 1e-4) / 2, 2: 0.05, 349: 0.05, 350: 0.005, 449: 0.005,
            450: 0.0005, 499: 0.0005}
    for step, lr in want.items():
        assert float(s(step)) == pytest.approx(lr, rel=1e-6), step
    again = WarmupStepsDecay.from_config(s.get_config())
    assert float(again(351)) == float(s(351))
    cfg = config_from_dict({"train": {"lr_policy": "steps_with_relative_lrs", "epochs": 50,
                                      "lr_steps": [0, 35, 45], "lr_relative": [1, 0.1, 0.01],
                                      "base_lr": 0.05, "warmup_epochs": 0.19,
                                      "warmup_start_lr": 1e-4}})
    sched = optim.make_schedule(cfg.train, steps_per_epoch=10)
    assert isinstance(sched, WarmupStepsDecay) and sched.warmup_steps == 2
    assert float(sched(400)) == pytest.approx(0.005)


@pytest.mark.parametrize("train, message", [
    ({"lr_policy": "steps_with_relative_lrs"}, "needs train.lr_steps and train.lr_relative"),
    ({"lr_policy": "steps_with_relative_lrs", "lr_steps": [0, 5], "lr_relative": [1]},
     "1 values for 2 train.lr_steps"),
    ({"lr_policy": "steps_with_relative_lrs", "lr_steps": [1, 5], "lr_relative": [1, 0.1]},
     "increasing epochs starting at 0"),
    ({"lr_steps": [0, 5]}, "apply to lr_policy 'steps_with_relative_lrs' only"),
    ({"optimizer": "adam"}, "train.optimizer: expected one of 'reference', 'keras'"),
])
def test_config_errors(train, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict({"train": dict({"epochs": 10}, **train)}, "x.json")


def test_checkpoint_without_form_marker_counts_as_keras_sgd(tmp_path):
    path = tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(tmp_path / "old"))  # pre-marker
    rundir.check_optimizer_form(path, "keras", "x.json")  # resumes
    with pytest.raises(ValueError, match=r"x.json: train.optimizer is 'reference' but the "
                                         r"checkpoint .* 'keras' optimizer form .*"
                                         r"--set train.optimizer=keras"):
        rundir.check_optimizer_form(path, "reference", "x.json")
