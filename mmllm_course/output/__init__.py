"""Part 4 of the map, the output side: signal tokens, the output projector and the losses that align them with a generator.

Chapter 9 (NExT-GPT, https://arxiv.org/abs/2309.05519; GILL, https://arxiv.org/abs/2305.17216):

- ``signal_token_names`` / ``add_signal_tokens``: ``[IMG0]..[IMGk-1]`` in the tokenizer and the LM's embeddings;
- ``signal_token_labels`` / ``signal_hidden_states``: the labels of the signal-token NLL, the hidden
  states (B, K, D) at the signal tokens;
- ``OutputProjectorConfig`` / ``OutputProjector``: (B, K, D) -> the generator's conditioning (B, L, D_cond);
- ``conditioning_l2_loss`` / ``signal_token_nll``: two of NExT-GPT's three losses (the third is the
  generator's denoising loss, :func:`mmllm_course.generators.diffusion_loss`);
- ``ImageGeneratingLM`` (``generate_image(prompt)`` -> ``ImageGeneration``), ``draw_request`` and the
  request phrasings: the pipeline end to end;
- ``Chapter9Recipe`` / ``CHAPTER9`` / ``train_output_side`` / ``evaluate_output_side`` /
  ``held_out_requests``: the chapter's training and measurement (more in ``mmllm_course.output.recipe``).
"""

from mmllm_course.output.losses import conditioning_l2_loss, signal_token_nll
from mmllm_course.output.pipeline import HELD_OUT_TEMPLATES, REQUEST_TEMPLATES, ImageGeneratingLM, ImageGeneration, draw_request
from mmllm_course.output.projector import OutputProjector, OutputProjectorConfig
from mmllm_course.output.recipe import (
    CHAPTER9,
    CHAPTER9_BARS,
    Chapter9Recipe,
    evaluate_output_side,
    held_out_requests,
    train_output_side,
)
from mmllm_course.output.signal_tokens import add_signal_tokens, signal_hidden_states, signal_token_labels, signal_token_names

__all__ = ["OutputProjector", "OutputProjectorConfig", "add_signal_tokens", "conditioning_l2_loss", "signal_hidden_states",
           "signal_token_labels", "signal_token_names", "signal_token_nll",
           "HELD_OUT_TEMPLATES", "REQUEST_TEMPLATES", "ImageGeneratingLM", "ImageGeneration", "draw_request",
           "CHAPTER9", "CHAPTER9_BARS", "Chapter9Recipe", "evaluate_output_side", "held_out_requests", "train_output_side"]
