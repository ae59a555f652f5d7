"""Part 4 of the map, the output side, the discrete route: images as words of a codebook (chapter 10).

``quantizer``: the VQ-VAE quantiser step (nearest code, straight-through estimator, codebook and
commitment losses), in parity with ``diffusers``' ``VectorQuantizer``; ``tokenizer``: the VQ-VAE
that turns a 32x32 image into a grid of code indices and back; ``image_lm``: the LM (chapter 5's
LLaMA architecture) with the codebook as extra vocabulary, writing an image token by token after a
request; ``pretrain``: the script that trains the shipped pair and its loader.
"""

from mmllm_course.visual_tokens.quantizer import (
    CodebookQuantizer,
    QuantizerOutput,
    codes_to_vectors,
    nearest_code,
    perplexity_of,
    restart_dead_codes,
    straight_through,
    vq_losses,
)
from mmllm_course.visual_tokens.image_lm import (
    ImageLMConfig,
    ImageLMTrainConfig,
    ImageTokenLM,
    image_token,
    request_for,
    train_image_lm,
)
from mmllm_course.visual_tokens.pretrain import evaluate_image_lm, load_chapter10
from mmllm_course.visual_tokens.tokenizer import (
    TokenizerOutput,
    TokenizerTrainConfig,
    VQTokenizer,
    VQTokenizerConfig,
    finetune_decoder,
    object_weights,
    tokenizer_metrics,
    train_tokenizer,
)

__all__ = [
    "CodebookQuantizer", "QuantizerOutput", "codes_to_vectors", "nearest_code", "perplexity_of", "restart_dead_codes",
    "straight_through", "vq_losses",
    "TokenizerOutput", "TokenizerTrainConfig", "VQTokenizer", "VQTokenizerConfig", "object_weights", "tokenizer_metrics",
    "train_tokenizer", "finetune_decoder",
    "ImageLMConfig", "ImageLMTrainConfig", "ImageTokenLM", "image_token", "request_for", "train_image_lm",
    "evaluate_image_lm", "load_chapter10",
]
