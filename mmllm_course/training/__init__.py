"""Training: one loop for every stage (pretraining, stage-1 alignment, instruction tuning), what each stage trains, save/load.

``train(model, data, TrainConfig(...))`` optimises the parameters that have ``requires_grad``;
``freeze`` a part to keep it fixed, or ``freeze_for_stage(model, "stage1" | "stage2" | "full")``.
Chapter 5 trains a bridge between a frozen encoder and a frozen LM; chapter 7 adds LoRA adapters
(``add_lora``, through ``peft``) and runs the same loop under ``accelerate`` on several processes.
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
from mmllm_course.training.stages import (
    LLAMA_ATTENTION,
    STAGES,
    add_lora,
    freeze_for_stage,
    load_adapters,
    lora_parameter_count,
    merge_lora,
    save_adapters,
    stage_parameter_counts,
)

__all__ = ["LLAMA_ATTENTION", "STAGES", "TrainConfig", "TrainHistory", "add_lora", "caption_metrics", "count_parameters",
           "freeze", "freeze_for_stage", "load_adapters", "load_trainable", "lora_parameter_count", "merge_lora",
           "save_adapters", "save_trainable", "stage_parameter_counts", "train"]
