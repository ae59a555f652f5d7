"""Images to tokens: cut an image into patches, flatten each one, project it to the model width.

Dims: ``B`` batch, ``C`` channels, ``H x W`` image size, ``p`` patch size, ``N = (H/p)(W/p)`` patches,
``D`` model width. Patches are numbered row-major (left to right, then top to bottom) and each
flattened patch lists its pixels row-major with the channels of a pixel together: ``(p1 p2 c)``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from mmllm_course.nn.position import sincos_2d_position_embedding


def _check_images(images: torch.Tensor, patch_size: int, channels: int | None = None, name: str = "images") -> None:
    """Raise a ValueError that names expected and actual sizes when ``images`` cannot be patchified."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must have 4 dims (B, C, H, W), got {images.dim()} dims with shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (e.g. float32 in [0, 1]), got dtype {images.dtype}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size}")
    _, c, h, w = images.shape
    if channels is not None and c != channels:
        raise ValueError(f"expected {channels} channels, got {c} (images of shape {tuple(images.shape)})")
    if h % patch_size or w % patch_size:
        raise ValueError(
            f"image size {h}x{w} is not divisible by patch_size={patch_size}: "
            f"expected height and width to be multiples of {patch_size}"
        )


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping square patches and flatten each one.

    images: (B, C, H, W) -> patches: (B, N, p*p*C) with N = (H/p) * (W/p), row-major.
    """
    _check_images(images, patch_size)
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, grid_h: int, grid_w: int | None = None) -> torch.Tensor:
    """The exact inverse of :func:`patchify`: patches (B, N, p*p*C) -> images (B, C, H, W)."""
    grid_w = grid_h if grid_w is None else grid_w
    if patches.dim() != 3:
        raise ValueError(f"patches must be (B, N, p*p*C), got shape {tuple(patches.shape)}")
    b, n, k = patches.shape
    if n != grid_h * grid_w:
        raise ValueError(f"expected {grid_h}x{grid_w}={grid_h * grid_w} patches, got {n}")
    if k % (patch_size * patch_size):
        raise ValueError(f"patch length {k} is not a multiple of patch_size^2={patch_size * patch_size}")
    return rearrange(patches, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=grid_h, w=grid_w, p1=patch_size, p2=patch_size)


class PatchEmbedding(nn.Module):
    """Linear projection of flattened patches: images (B, C, H, W) -> tokens (B, N, D).

    One shared ``nn.Linear(p*p*C, D)`` applied to every patch. That is exactly a ``Conv2d`` with
    kernel size and stride ``p``: see :meth:`to_conv2d` and :meth:`load_conv2d`.
    """

    def __init__(self, image_size: int = 32, patch_size: int = 8, in_channels: int = 3, dim: int = 64, bias: bool = True):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        self.image_size, self.patch_size, self.in_channels, self.dim = image_size, patch_size, in_channels, dim
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Linear(patch_size * patch_size * in_channels, dim, bias=bias)

    def check_images(self, images: torch.Tensor) -> None:
        """Raise a ValueError naming expected and actual sizes unless images are (B, C, image_size, image_size) floats."""
        _check_images(images, self.patch_size, self.in_channels)
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"expected images of size {self.image_size}x{self.image_size}, got {images.shape[-2]}x{images.shape[-1]}"
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return self.proj(patchify(images, self.patch_size))  # (B, N, D)

    def to_conv2d(self) -> nn.Conv2d:
        """A strided ``Conv2d`` that computes the same tokens (as (B, D, H/p, W/p) feature maps)."""
        p, c = self.patch_size, self.in_channels
        conv = nn.Conv2d(c, self.dim, kernel_size=p, stride=p, bias=self.proj.bias is not None)
        with torch.no_grad():
            # Linear weight (D, p*p*C) in (p1 p2 c) order -> conv weight (D, C, p, p).
            conv.weight.copy_(rearrange(self.proj.weight, "d (p1 p2 c) -> d c p1 p2", p1=p, p2=p, c=c))
            if self.proj.bias is not None:
                conv.bias.copy_(self.proj.bias)
        return conv

    @torch.no_grad()
    def load_conv2d(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "PatchEmbedding":
        """Load a conv kernel (D, C, p, p) (and bias (D,)), as ViT checkpoints store it."""
        expected = (self.dim, self.in_channels, self.patch_size, self.patch_size)
        if tuple(weight.shape) != expected:
            raise ValueError(f"expected a conv weight of shape {expected}, got {tuple(weight.shape)}")
        self.proj.weight.copy_(rearrange(weight, "d c p1 p2 -> d (p1 p2 c)"))
        if bias is not None:
            if self.proj.bias is None:
                raise ValueError("this PatchEmbedding was built with bias=False but a bias was given")
            self.proj.bias.copy_(bias)
        return self


class VisionEmbeddings(nn.Module):
    """The input layer of a ViT: patch tokens, an optional [CLS] token, and position embeddings.

    images (B, C, H, W) -> tokens (B, 1 + N, D) with [CLS] first (or (B, N, D) without it).
    ``position="learned"`` trains one vector per position (ViT, CLIP); ``"sincos"`` uses the fixed
    2-D sine-cosine table (MAE) and gives the [CLS] token position zero.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 8,
        in_channels: int = 3,
        dim: int = 64,
        cls_token: bool = True,
        position: str = "learned",
        patch_bias: bool = True,
    ):
        super().__init__()
        if position not in ("learned", "sincos"):
            raise ValueError(f"position must be 'learned' or 'sincos', got {position!r}")
        self.patch_embedding = PatchEmbedding(image_size, patch_size, in_channels, dim, bias=patch_bias)
        n = self.patch_embedding.num_patches + int(cls_token)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if cls_token else None
        if position == "learned":
            self.position_embedding = nn.Parameter(torch.randn(1, n, dim) * 0.02)  # (1, 1+N, D)
        else:
            g = self.patch_embedding.grid_size
            table = sincos_2d_position_embedding(g, g, dim)  # (N, D)
            if cls_token:
                table = torch.cat([torch.zeros(1, dim), table], dim=0)
            self.register_buffer("position_embedding", table[None], persistent=False)
        self.num_tokens = n

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(images)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # (B, 1+N, D)
        return x + self.position_embedding.to(x.dtype)


def vision_embeddings_from_vit(hf_embeddings: nn.Module) -> VisionEmbeddings:
    """Build our :class:`VisionEmbeddings` holding the weights of a ``transformers`` ``ViTEmbeddings``.

    Reads the live ``state_dict()`` (names as in transformers 5.x):
    ``cls_token`` (1, 1, D), ``position_embeddings`` (1, 1+N, D),
    ``patch_embeddings.projection.weight`` (D, C, p, p) and ``.bias`` (D,).
    """
    sd = hf_embeddings.state_dict()
    required = ["cls_token", "position_embeddings", "patch_embeddings.projection.weight"]
    missing = [k for k in required if k not in sd]
    if missing:
        raise ValueError(f"not a ViTEmbeddings state dict: missing {missing}; found {sorted(sd)[:8]}")
    w = sd["patch_embeddings.projection.weight"]
    dim, c, p, _ = w.shape
    n = sd["position_embeddings"].shape[1] - 1
    grid = int(round(n**0.5))
    if grid * grid != n:
        raise ValueError(f"expected a square grid of patches, got {n} position embeddings besides [CLS]")
    bias = sd.get("patch_embeddings.projection.bias")
    ours = VisionEmbeddings(grid * p, p, c, dim, cls_token=True, position="learned", patch_bias=bias is not None)
    ours.patch_embedding.load_conv2d(w, bias)
    with torch.no_grad():
        ours.cls_token.copy_(sd["cls_token"])
        ours.position_embedding.copy_(sd["position_embeddings"])
    return ours
