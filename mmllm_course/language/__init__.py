"""The language model of the course: tiny ``transformers`` causal LMs (LLaMA, GPT-2) and the text they are pretrained on.

- ``CausalLMConfig`` / ``make_causal_lm``: a ``LlamaForCausalLM`` or ``GPT2LMHeadModel`` sized for a CPU;
- ``course_lm_tokenizer``: the offline shapes-world BPE with the ``<image>`` placeholder (``IMAGE_TOKEN``);
- ``add_special_tokens_to_lm``: new special tokens in a tokenizer and rows in the LM's embeddings (chapters 5 and 9);
- ``CorpusConfig`` / ``make_text_corpus``: captions and answers, with a context to read (or without:
  the pitfall a frozen LM cannot recover from);
- ``CHAT_TEMPLATE`` / ``chat_tokenizer`` / ``chat_prompts``: the chat format of instruction tuning (chapter 7).
"""

from mmllm_course.language.chat import CHAT_TEMPLATE, chat_prompts, chat_tokenizer, image_question
from mmllm_course.language.corpus import CAPTION_PROMPT, CorpusConfig, TextCorpus, make_text_corpus
from mmllm_course.language.lm import IMAGE_TOKEN, CausalLMConfig, add_special_tokens_to_lm, course_lm_tokenizer, make_causal_lm

__all__ = ["CAPTION_PROMPT", "CHAT_TEMPLATE", "IMAGE_TOKEN", "CausalLMConfig", "CorpusConfig", "TextCorpus", "add_special_tokens_to_lm", "chat_prompts",
           "chat_tokenizer", "course_lm_tokenizer", "image_question", "make_causal_lm", "make_text_corpus"]
