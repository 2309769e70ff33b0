"""Using a trained model: SavedModel export for TF Serving, its client, LiteRT, prediction, speed.

    loading.py         a trained model from a .keras / .weights.h5 file
    serving.py         SavedModel export: signatures, request caps, warmup requests
    export.py          the export command (export.py, vov3d-export)
    serving_client.py  sampled frames of a video file -> REST / gRPC requests
    serving_bench.py   SavedModel vs in-process Keras latency  (vov3d-serving-bench)
    lite.py            LiteRT (.tflite) conversion, quantization and comparison  (vov3d-lite)
    predict.py         top-k labels of a video, or per window of a long one  (vov3d-predict)
    bench.py           clips/s and peak memory per runtime, beside the PyTorch peer  (vov3d-bench)
"""
