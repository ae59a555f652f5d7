"""mmllm-course: a compact PyTorch library that builds a multimodal LLM one idea at a time.

The packages follow the data through the five-part map of a multimodal LLM:

    data -> encoders -> bridges -> backbones -> output -> generators

``nn`` holds the building blocks every part shares, ``grading`` the exercise checker and ``viz``
the figures and widgets of the notebooks. Nothing here imports ``transformers`` or ``diffusers`` at
import time: the converters that read their weights import them when called.

Bad input fails early and clearly: every public entry point raises a ``ValueError`` (a
``TypeError`` for a wrong type, e.g. a list or numpy array where a tensor is needed) naming what
was expected and what came. dtypes follow ``transformers``' rule: a module casts floating-point
inputs to its parameter dtype. Masks are boolean or 0/1 integers, 1 = keep. A converter refuses a
checkpoint of another ``model_type`` and any weight it cannot map one to one. See
``mmllm_course._checks``.
"""

from mmllm_course.utils import get_device, seed_everything

__version__ = "0.1.0"
__all__ = ["get_device", "seed_everything", "__version__"]
