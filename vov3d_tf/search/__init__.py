"""Keras Tuner width/depth search whose winner train.py runs.

    space.py    hyperparameters -> create_model keyword arguments and a trial's config
    oracle.py   keras-tuner oracles that reject over-budget candidates before training
    tuner.py    a trial = train.py's training run of one candidate
    report.py   results.csv, the Pareto plot and best.json
    run.py      run_search(cfg): the search loop, resumable, chief + workers  (vov3d-search)
"""
