"""Building shards: videos, frame folders or synthetic clips -> TFRecord shards and a manifest.

    annotations.py  the annotation files (CSV, Something-Something v1/v2, Kinetics-400) -> items
    builder.py      the local build: plan, decode in worker processes, write, resume, manifest
    beam.py         the same build as an Apache Beam pipeline
    synthetic.py    the demo's temporal-order dataset  (vov3d-synthetic)
    __main__.py     the command line  (vov3d-build-shards; python -m vov3d_tf.data.build)
"""
