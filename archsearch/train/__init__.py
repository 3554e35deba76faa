"""Training one trial: config and presets, data, precision, the loop, checkpoints, evaluation.

    config      TrainConfig, the papers' presets, the learning-rate schedule (torch-free)
    sources     where a dataset's images come from, decoding them
    data        the decoded-dataset cache, the train/validation split
    augment     epoch plans, batched crops and flips, normalisation on the device
    precision   device, autocast dtype, memory format
    evaluate    validation error, precise BN, latency
    checkpoint  atomic checkpoints and exact resume
    loop        `train`: the epoch loop and its callback `report(epoch, metrics)`
"""

from archsearch.train.config import TrainConfig, make_config
from archsearch.train.data import load_dataset
from archsearch.train.loop import TrainingFailure, train

__all__ = ["TrainConfig", "TrainingFailure", "load_dataset", "make_config", "train"]
