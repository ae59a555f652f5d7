"""Part 0 of the map, data: the synthetic shapes world, an offline BPE tokenizer and bundled sample photos.

Everything here works offline. ``transformers`` and ``skimage`` are imported only when a tokenizer
is trained or a sample image is loaded.
"""

from mmllm_course.data.images import SAMPLE_IMAGES, load_sample_image
from mmllm_course.data.shapes import (
    ANSWERS,
    ATTRIBUTES,
    COLOR_RGB,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapesBatch,
    ShapesDataset,
    ShapesWorldConfig,
    all_caption_classes,
    caption_class_index,
    caption_for,
    collate_shapes,
    color_shape_classes,
    color_shape_index,
    generate_shapes,
    questions_for,
    scene_caption,
)
from mmllm_course.data.tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    default_corpus,
    shapes_tokenizer,
    train_bpe_tokenizer,
)

__all__ = [
    "ANSWERS",
    "ATTRIBUTES",
    "BOS_TOKEN",
    "COLORS",
    "COLOR_RGB",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "POSITIONS",
    "SAMPLE_IMAGES",
    "SHAPES",
    "SIZES",
    "ShapesBatch",
    "ShapesDataset",
    "ShapesWorldConfig",
    "all_caption_classes",
    "caption_class_index",
    "caption_for",
    "collate_shapes",
    "color_shape_classes",
    "color_shape_index",
    "default_corpus",
    "generate_shapes",
    "load_sample_image",
    "questions_for",
    "scene_caption",
    "shapes_tokenizer",
    "train_bpe_tokenizer",
]
