"""mmllm-course: a compact PyTorch library that builds a multimodal LLM one idea at a time.

The packages follow the data through the five-part map of a multimodal LLM:

    data -> encoders -> bridges -> backbones -> output -> generators

``nn`` holds the building blocks every part shares, ``grading`` the exercise checker and ``viz``
the figures and widgets of the notebooks. Nothing here imports ``transformers`` or ``diffusers`` at
import time: the converters that read their weights import them when called.
"""

from mmllm_course.utils import get_device, seed_everything

__version__ = "0.1.0"
__all__ = ["get_device", "seed_everything", "__version__"]
