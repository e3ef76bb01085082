"""Training: one loop (``loop.py``) that every phase shares, one small recipe per phase, losses.

    python -m tinytribe.train.phase2 --study runs/demo_study --run-dir runs/kd --recipe phase2
    python -m tinytribe.train.phase3 --study runs/demo_study --run-dir runs/fmri --init runs/kd/checkpoints/best.pt

A recipe builds the data and the loss of its phase; the loop does the rest (device and precision,
optimiser and schedule, budget, checkpoints and exact resume, validation, logs, DDP).
"""
