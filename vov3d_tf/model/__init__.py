"""The network: layers, the VoV3D / X3D builder, BN folding, official weights, FLOPs.

    layers.py      fast channels-last conv layers (PyTorch-exact padding), fused BN, apply_* blocks
    networks.py    architecture constants, variants as data, the families' rules, create_model
    inference.py   fold_batchnorm: the inference form of a trained model
    convert.py     official PyTorch weights (.pth/.pyth/.npz) -> Keras  (vov3d-convert)
    flops.py       multiply-adds and parameters for any model and clip shape  (vov3d-flops)
"""
