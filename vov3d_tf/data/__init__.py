"""Video data: the shard format, reading shards into clips and views, and building shards.

    format.py       the record keys, SequenceExample make/parse, shard names, the stored frames
    shards.py       shard files and their manifest.json: atomic writing, sha256, labels
    labels.py       the labels-file reader (one class per line) every command uses
    specs.py        TrainClip, EvalViews, ReadOptions: what the pipeline is asked to make
    preprocess.py   pure TF sampling, decoding, resizing, cropping, normalization, request caps
    pipeline.py     train_dataset / eval_dataset: shard files -> records -> clips or views
    video_io.py     one video file (PyAV) or frame folder -> the stored JPEG frames
    stream.py       long videos: frames decoded one at a time, sliding windows of them
    validate.py     check a shard directory against its manifest  (vov3d-validate)
    bench.py        pipeline clips/s against the raw JPEG-decode limit  (vov3d-data-bench)
    build/          videos, frame folders or synthetic clips -> shards  (vov3d-build-shards)
"""
from vov3d_tf.data.labels import read_labels
from vov3d_tf.data.pipeline import eval_dataset, load_labels, train_dataset
from vov3d_tf.data.specs import EvalViews, ReadOptions, TrainClip

__all__ = ["train_dataset", "eval_dataset", "TrainClip", "EvalViews", "ReadOptions",
           "load_labels", "read_labels"]
