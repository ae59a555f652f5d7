"""A chat template for the course tokenizer: how an instruction-tuned model sees a conversation.

Instruction tuning (stage 2) trains on conversations, not captions. A **chat template** is the
tokenizer's rule for writing a list of messages as one string, so that training and inference format
turns the same way (``transformers``' ``apply_chat_template`` renders it; every instruction-tuned
checkpoint ships one). The course's template is short, because the tiny LM's context is 64 tokens::

    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle?"}]},
     {"role": "assistant", "content": "red"}]
    ->  "<image>Q: What colour is the circle? A: red<|eos|>"

An image part renders as the ``<image>`` placeholder (backbone A expands it to K image tokens), a
user turn as ``Q: ...``, an assistant turn as `` A: ...`` closed by eos. ``add_generation_prompt``
ends the string with `` A:`` so the model writes the answer next. No bos: backbone A's ``tokenize``
adds it. Only the assistant's words take loss (labels -100 on everything else).
"""

from __future__ import annotations

from collections.abc import Sequence

from mmllm_course._checks import InputTypeError, check_str_sequence, describe
from mmllm_course.language.lm import IMAGE_TOKEN, course_lm_tokenizer

# Jinja, as transformers renders it (``tokenizer.chat_template``).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if not loop.first %} {% endif -%}"
    "{%- if message['content'] is string -%}Q: {{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}" + IMAGE_TOKEN + "{%- endfor -%}"
    "Q: {% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor -%}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' %} A: {{ message['content'] }}{{ eos_token }}"
    "{%- else -%}{{ raise_exception('a message role must be user or assistant, got ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %} A:{% endif -%}"
)


def chat_tokenizer():
    """The course LM tokenizer (:func:`~mmllm_course.language.course_lm_tokenizer`) with :data:`CHAT_TEMPLATE` set."""
    tokenizer = course_lm_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _check_tokenizer(tokenizer):
    if tokenizer is None:
        return chat_tokenizer()
    if not hasattr(tokenizer, "apply_chat_template"):
        raise InputTypeError(f"tokenizer must be a transformers tokenizer (chat_tokenizer()), got {describe(tokenizer)}")
    if getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def image_question(question: str, num_images: int = 1) -> list[dict]:
    """The one-turn conversation ``[user: <image> x num_images + question]`` in ``transformers``' message format."""
    if not isinstance(question, str):
        raise InputTypeError(f"question must be a str, got {describe(question)}")
    if isinstance(num_images, bool) or not isinstance(num_images, int):
        raise InputTypeError(f"num_images must be an int, got {describe(num_images)}")
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    return [{"role": "user", "content": [{"type": "image"}] * num_images + [{"type": "text", "text": question}]}]


def chat_prompts(questions: Sequence[str], tokenizer=None, num_images: int = 1) -> list[str]:
    """Each question as the rendered chat prompt the model answers: ``"<image>Q: {question} A:"``.

    Rendered through ``tokenizer.apply_chat_template`` (``tokenizer`` defaults to
    :func:`chat_tokenizer`; one without a template gets :data:`CHAT_TEMPLATE`). Pair a prompt with
    the target ``" " + answer`` in backbone A's ``tokenize``: the answer (and eos) takes the loss.
    """
    questions = check_str_sequence(questions, "questions", allow_empty=False)
    tokenizer = _check_tokenizer(tokenizer)
    return [tokenizer.apply_chat_template(image_question(q, num_images), tokenize=False, add_generation_prompt=True)
            for q in questions]


__all__ = ["CHAT_TEMPLATE", "chat_prompts", "chat_tokenizer", "image_question"]
