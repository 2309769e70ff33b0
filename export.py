"""Export a trained model as a TF Serving SavedModel: the front of `vov3d-export`.

    python export.py --weights runs/demo/best.keras --config configs/demo.json \
        --output-dir models/demo

The command is `vov3d_tf.deploy.export.main` (`--help`, docs/serving.md).
"""
import sys

from vov3d_tf.deploy.export import main

if __name__ == "__main__":
    sys.exit(main())
