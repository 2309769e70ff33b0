"""Import of official PyTorch weights: .npz and .pth, CLI, and key/shape errors."""
import numpy as np
import pytest

import vov3d_tf
from vov3d_tf.model.convert import convert, keras_layer_name, load_torch_weights, main, torch_module_name


def test_name_mapping_round_trips(parity_weights):
    modules = {k.rpartition(".")[0] for k in parity_weights}
    assert len(modules) > 300
    model = vov3d_tf.create_model("vov3d_m", 10)
    layer_names = {l.name for l in model.layers if l.weights}
    mapped = {keras_layer_name(m, "vov3d") for m in modules}
    assert mapped == layer_names  # every weighted layer gets exactly the official tensors
    for m in modules:
        assert torch_module_name(keras_layer_name(m, "vov3d"), "vov3d") == m
    for name in ("s3_b1_a", "s3_b1_b", "s3_b1_b_bn", "s3_b1_se_fc1", "s3_b1_c_bn"):
        assert keras_layer_name(torch_module_name(name, "x3d"), "x3d") == name


def test_errors_list_missing_unexpected_and_misshaped_keys(parity_weights):
    state = dict(parity_weights)  # edited below; the fixture is shared
    del state["s3.pathway0_res1.branch2.layers.2.b1.weight"]
    state["s3.pathway0_res1.branch2.layers.9.a.0.weight"] = np.zeros((80, 40, 1, 1, 1))
    state["head.projection.weight"] = np.zeros((11, 2048), "float32")
    model = vov3d_tf.create_model("vov3d_m", 10)
    with pytest.raises(ValueError) as e:
        load_torch_weights(model, state)
    msg = str(e.value)
    assert "1 missing key(s)" in msg and "s3.pathway0_res1.branch2.layers.2.b1.weight" in msg
    assert "1 unexpected key(s)" in msg and "layers.9.a.0.weight" in msg
    assert "1 mis-shaped key(s)" in msg and "head.projection.weight: got (11, 2048)" in msg


def test_wrong_class_count_is_reported(parity_weights, tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **parity_weights)
    with pytest.raises(ValueError, match="head.projection.bias: got \\(10,\\)"):
        convert(str(path), "vov3d_m", 174)


def test_pth_checkpoint_and_cli(parity_npz, parity_weights, tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="the `convert` extra (PyTorch) is not installed")
    import keras
    state = {k: torch.from_numpy(v) for k, v in parity_weights.items()}
    state["s1.pathway0_stem.bn.num_batches_tracked"] = torch.tensor(5)
    pth = tmp_path / "ckpt.pyth"
    torch.save({"model_state": state, "epoch": 3}, pth)
    out = tmp_path / "vov3d_m.keras"
    assert main([str(pth), "--model", "vov3d_m", "--num-classes", "10",
                 "--output", str(out)]) == 0
    assert "3,204,286" not in capsys.readouterr().out  # 10 classes, not 174
    model = keras.models.load_model(out)
    x = parity_npz["input"].transpose(0, 2, 3, 4, 1)
    assert np.abs(model(x, training=False).numpy() - parity_npz["logits"]).max() <= 1e-4


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nope.pth"), "--model", "vov3d_m", "--num-classes", "3",
                 "--output", str(tmp_path / "o.keras")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    pytest.importorskip("torch", reason="the `convert` extra (PyTorch) is not installed")
    assert main([str(bad), "--model", "vov3d_m", "--num-classes", "3",
                 "--output", str(tmp_path / "o.keras")]) == 2
    assert "not a readable weights-only PyTorch checkpoint" in capsys.readouterr().err
