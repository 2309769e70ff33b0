"""Train and evaluate VoV3D / X3D from a JSON config: the front of `vov3d-train`.

    python train.py --config configs/demo.json                     # synthetic demo on CPU
    python train.py --config configs/ssv2.json --set train.epochs=3 train.batch_size=32
    python train.py --config configs/ssv2.json --eval-only [--weights runs/x/best.keras]
    python train.py --config configs/ssv2.json --force              # retrain a finished run

The command is `vov3d_tf.train.training.main` (docs/training.md).
"""
import sys

from vov3d_tf.train.training import main

if __name__ == "__main__":
    sys.exit(main())
