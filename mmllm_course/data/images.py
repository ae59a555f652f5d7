"""Real photos without downloads: the sample images bundled inside scikit-image, as tensors.

``load_sample_image(name, size)`` -> (3, H, W) float32 in [0, 1]; with ``size``, a square centre crop
resized to (3, size, size). Only images whose files ship with scikit-image are listed, so nothing
here reaches the network. ``skimage`` is imported on the first call (it is slow to import).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mmllm_course._checks import check_int

# Names of skimage.data functions whose image files are bundled with the package (no pooch download).
SAMPLE_IMAGES: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "horse",
    "moon",
    "text",
    "page",
    "brick",
    "grass",
    "gravel",
    "clock",
    "colorwheel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "retina",
    "cell",
)


def load_sample_image(name: str = "astronaut", size: int | None = None) -> torch.Tensor:
    """A bundled scikit-image photo as a (3, H, W) float32 tensor in [0, 1].

    Grayscale (and binary) images are repeated to 3 channels; an alpha channel is dropped. With
    ``size``, the largest centred square is cropped and resized (bilinear, antialiased) to
    (3, size, size), the input a ViT expects.
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image {name!r}: expected one of {SAMPLE_IMAGES}")
    if size is not None:
        size = check_int(size, "size (a positive integer or None)")
    import skimage.data

    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype == bool:
        array = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / np.iinfo(array.dtype).max
    else:
        array = array.astype(np.float32)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    array = array[..., :3]  # drop alpha
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()  # (3, H, W)
    if size is not None:
        _, h, w = image.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = image[:, top : top + side, left : left + side]
        image = F.interpolate(square[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        image = image.clamp(0.0, 1.0)
    return image
