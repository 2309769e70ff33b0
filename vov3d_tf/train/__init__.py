"""What a training run is: run(cfg) top to bottom and everything it uses.

    training.py    run(cfg) and evaluate_run(cfg): setup, data, model, restore, fit, finish
                   (vov3d-train)
    data.py        the run's data: demo shards, checks, record counts, the config's datasets
    optim.py       the reference's SGD step, the LR schedules, the optimizer of train.optimizer
    finetune.py    model.init_weights (pretrained weights) and train.freeze
    distribute.py  the tf.distribute strategy, the chief, the multi-worker fit workaround, SyncBN
    callbacks.py   step checkpoints, periodic eval, LR and CSV logging
    rundir.py      the run directory: its file names, resume checks, the inference .keras files
    evaluation.py  the multi-view test, metrics files, precise BN
    submission.py  predictions.csv -> a test-set submission file  (vov3d-submission)
"""
