"""Training: one loop for every stage (pretraining, stage-1 alignment, fine-tuning), save/load of the trained parts, metrics.

``train(model, data, TrainConfig(...))`` optimises the parameters that have ``requires_grad``;
``freeze`` a part to keep it fixed. Chapter 5 trains a bridge between a frozen encoder and a frozen LM.
"""

from mmllm_course.training.loop import (
    TrainConfig,
    TrainHistory,
    count_parameters,
    freeze,
    load_trainable,
    save_trainable,
    train,
)
from mmllm_course.training.metrics import caption_metrics

__all__ = ["TrainConfig", "TrainHistory", "caption_metrics", "count_parameters", "freeze", "load_trainable",
           "save_trainable", "train"]
