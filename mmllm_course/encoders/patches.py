"""Images to tokens: cut an image into patches, flatten each one, project it to the model width.

Dims: ``B`` batch, ``C`` channels, ``H x W`` image size, ``p`` patch size, ``N = (H/p)(W/p)`` patches,
``D`` model width. Patches are numbered row-major (left to right, then top to bottom) and each
flattened patch lists its pixels row-major with the channels of a pixel together: ``(p1 p2 c)``.

Images must be floating point (uint8 pixels are refused rather than guessed at); the modules cast
them to their parameter dtype (the dtype rule of ``mmllm_course._checks``, as ``transformers``' ViT
and CLIP do). Images and ``image_size`` are square: ``image_size`` is one integer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mmllm_course._checks import InputTypeError, check_int, check_tensor, describe, to_module_dtype
from mmllm_course.nn.position import sincos_2d_position_embedding


def check_image_size(image_size: object, name: str = "image_size") -> int:
    """The side of a square image as an int; a pair (H, W) with H == W is read as H.

    Non-square sizes are refused (the position-embedding grid, the converters and the figures of
    this library assume square images): resize or crop to a square first.
    """
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        h, w = (check_int(v, name) for v in image_size)
        if h != w:
            raise ValueError(
                f"{name} must be one integer (square images H = W), got {tuple(image_size)}: non-square "
                "images are not supported; resize or crop them to a square"
            )
        return h
    return check_int(image_size, name)


def _check_images(images: torch.Tensor, patch_size: int, channels: int | None = None, name: str = "images") -> None:
    """Raise a ValueError that names expected and actual sizes when ``images`` cannot be patchified."""
    check_tensor(images, name, "(B, C, H, W)")
    if images.dim() != 4:
        raise ValueError(f"{name} must have 4 dims (B, C, H, W), got {images.dim()} dims with shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InputTypeError(f"{name} must be a floating-point tensor (e.g. float32 in [0, 1]), got dtype {images.dtype}")
    patch_size = check_int(patch_size, "patch_size")
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
    check_tensor(patches, "patches", "(B, N, p*p*C)")
    patch_size, grid_h = check_int(patch_size, "patch_size"), check_int(grid_h, "grid_h")
    grid_w = grid_h if grid_w is None else check_int(grid_w, "grid_w")
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
        image_size, patch_size = check_image_size(image_size), check_int(patch_size, "patch_size")
        in_channels, dim = check_int(in_channels, "in_channels"), check_int(dim, "dim")
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
        """images (B, C, H, W) -> tokens (B, N, D), equal to ``self.proj(patchify(images, p))``.

        That one line is the idea (see :meth:`forward_patchify`); it runs here as the strided
        convolution it equals, with the same weights viewed as (D, C, p, p): one fused kernel
        instead of a copy of every pixel into patch order. A test keeps the two equal.
        """
        self.check_images(images)
        images = to_module_dtype(images, self)  # float64 / float16 images run in the weights' dtype
        p, c = self.patch_size, self.in_channels
        kernel = self.proj.weight.view(self.dim, p, p, c).permute(0, 3, 1, 2)  # (D, p*p*C) in (p1 p2 c) -> (D, C, p, p)
        maps = F.conv2d(images, kernel, self.proj.bias, stride=p)  # (B, D, H/p, W/p)
        return maps.flatten(2).transpose(1, 2)  # (B, N, D), patches row-major

    def forward_patchify(self, images: torch.Tensor) -> torch.Tensor:
        """The teaching form of :meth:`forward`: cut into patches, then one shared linear map."""
        self.check_images(images)
        images = to_module_dtype(images, self)
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
        check_tensor(weight, "weight", "(D, C, p, p)", kind="float")
        if bias is not None:
            check_tensor(bias, "bias", "(D,)", kind="float")
            if tuple(bias.shape) != (self.dim,):
                raise ValueError(f"expected a bias of shape ({self.dim},), got {tuple(bias.shape)}")
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
        if position == "sincos":
            dim = check_int(dim, "dim")
            if dim % 4:
                raise ValueError(f"position='sincos' needs dim divisible by 4, got dim={dim}")
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
    ``patch_embeddings.projection.weight`` (D, C, p, p) and ``.bias`` (D,). Any other weight
    (except ``mask_token``, which only masked-image modelling uses) or a missing one raises a
    ``ValueError`` listing them. ``VisionEmbeddings`` has no dropout: ViT's embedding dropout
    (``hidden_dropout_prob``) is applied by :class:`~mmllm_course.encoders.vit.ViT`.
    """
    if not isinstance(hf_embeddings, nn.Module):
        raise InputTypeError(f"expected a transformers ViTEmbeddings module (e.g. ViTModel(...).embeddings), got {describe(hf_embeddings)}")
    sd = hf_embeddings.state_dict()
    required = ["cls_token", "position_embeddings", "patch_embeddings.projection.weight"]
    optional = ["patch_embeddings.projection.bias", "mask_token"]  # mask_token: only for masked inputs, not ported
    missing = [k for k in required if k not in sd]
    unused = sorted(set(sd) - set(required) - set(optional))
    if missing or unused:
        raise ValueError(
            f"not a ViTEmbeddings state dict: missing {missing}, unused {unused[:12]}; got a "
            f"{type(hf_embeddings).__name__} (expected ViTModel(...).embeddings)"
        )
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
