"""How much meta-learning (the Reptile meta-learner) and cross-asset transfer training a run does; each profile
(cbi_assets/profiles.py) holds one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetaBudget:
    # --- Reptile: the base network and its adaptation ------------------------------------------
    units: tuple[int, ...] = (32, 16)  # hidden ReLU layers of the base MLP
    adapt_epochs: int = 5  # epochs over a new regime's support (about 30 sessions)
    batches_per_epoch: int = 3  # SGD steps per epoch: 30 daily rows in batches of 10
    inner_lr: float = 0.05  # plain SGD, in adaptation and in Reptile's inner loop alike
    long_epochs: int = 50  # the from-scratch network's longer budget, for comparison
    meta_iterations: int = 1000  # Reptile outer steps
    meta_batch: int = 4  # tasks adapted per outer step (their updates averaged)
    outer_lr: float = 1.0  # Reptile's step towards the adapted weights, decayed linearly to 0
    max_task_rows: int = 2000  # rows a support or query set keeps (intraday sets hold thousands of bars)
    scaler_rows: int = 756  # trailing rows a task's feature scaler is fitted on (3 years of daily sessions)
    held_out: int | None = None  # evaluate the last this many regimes; None: every one that can be
    min_meta_tasks: int = 2  # earlier tasks needed to meta-train; fewer is pre-training, not meta-learning
    seed: int = 7
    # --- Cross-asset transfer ------------------------------------------------------------------
    encoder_units: int = 64
    latent: int = 8
    head_units: int = 16
    transfer_epochs: int = 200
    transfer_patience: int = 10
    transfer_batch: int = 256
    transfer_lr: float = 1e-3
    test_fraction: float = 0.2  # the last part of the two assets' common history
    max_train_rows: int | None = None  # the most recent pre-split rows each model trains on
    few_rows: int = 250  # the "few asset rows" scenario: heads trained on the last year only
    validation_fraction: float = 0.2
