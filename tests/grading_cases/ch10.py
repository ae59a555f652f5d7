"""Grader cases for chapter 10: correct versions written several ways, and the mistakes learners make.

Besides ``correct`` and ``wrong``, an exercise may list ``diagnoses``: ``{label: (answer, words)}``, a
wrong answer whose ``fail`` message must contain ``words`` (the check names that mistake, not another).
"""

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.grading.checks.ch10 import (
    ema_update_reference,
    image_to_tokens_reference,
    tokens_to_image_reference,
    train_tokenizer_eval_data,
)
from mmllm_course.visual_tokens import CodebookQuantizer, nearest_code, straight_through, vq_losses

# ------------------------------------------------------------------------------------------- nearest_code


def nearest_library(z, codebook):
    """Correct: the library's (expanded norms)."""
    return nearest_code(z, codebook)


def nearest_cdist(z, codebook):
    """Correct, written differently: torch.cdist (diffusers' way), then argmin."""
    return torch.cdist(z, codebook).argmin(dim=1)


def nearest_loops(z, codebook):
    """Correct, written differently: one vector at a time, broadcasting, int32 indices."""
    out = []
    for v in z:
        out.append(int(((codebook - v) ** 2).sum(dim=1).argmin()))
    return torch.tensor(out, dtype=torch.int32)


def nearest_argmax(z, codebook):
    """Wrong: argmax instead of argmin."""
    return torch.cdist(z, codebook).argmax(dim=1)


def nearest_dot_product(z, codebook):
    """Wrong: the largest dot product (drops ||e||^2)."""
    return (z @ codebook.T).argmax(dim=1)


def nearest_cosine(z, codebook):
    """Wrong: cosine similarity."""
    return (F.normalize(z, dim=1) @ F.normalize(codebook, dim=1).T).argmax(dim=1)


def nearest_l1(z, codebook):
    """Wrong: Manhattan distance."""
    return (z[:, None] - codebook[None]).abs().sum(-1).argmin(dim=1)


def nearest_wrong_axis(z, codebook):
    """Wrong: the argmin over the vectors' axis."""
    return torch.cdist(z, codebook).argmin(dim=0)


def nearest_returns_vectors(z, codebook):
    """Wrong: the codes' vectors instead of their indices."""
    return codebook[torch.cdist(z, codebook).argmin(dim=1)]


def nearest_float(z, codebook):
    """Wrong: float indices."""
    return torch.cdist(z, codebook).argmin(dim=1).float()


def nearest_keepdim(z, codebook):
    """Wrong: (N, 1)."""
    return torch.cdist(z, codebook).argmin(dim=1, keepdim=True)


# ------------------------------------------------------------------------------------------- straight_through


def ste_library(z, z_q):
    """Correct: the library's."""
    return straight_through(z, z_q)


def ste_two_detaches(z, z_q):
    """Correct, written differently: z - z.detach() + z_q.detach()."""
    return z - z.detach() + z_q.detach()


class _Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, z_q):
        return z_q.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def ste_autograd_function(z, z_q):
    """Correct, written differently: a custom autograd.Function whose backward is the identity to z."""
    return _Identity.apply(z, z_q)


def ste_returns_zq(z, z_q):
    """Wrong: z_q returned without the straight-through trick."""
    return z_q


def ste_wrong_side(z, z_q):
    """Wrong: stop-gradient on the wrong side."""
    return z_q + (z - z_q).detach()


def ste_no_detach(z, z_q):
    """Wrong: no detach at all (the two z cancel in the gradient)."""
    return z + (z_q - z)


def ste_leaks_to_codebook(z, z_q):
    """Wrong: detaches only z, so the gradient reaches z_q too."""
    return z + z_q - z.detach()


def ste_everything_detached(z, z_q):
    """Wrong: no gradient at all."""
    return z_q.detach()


def ste_returns_z(z, z_q):
    """Wrong: the encoder's output."""
    return z


# ------------------------------------------------------------------------------------------- vq_losses


def losses_library(z, z_q, beta):
    """Correct: the library's."""
    return vq_losses(z, z_q, beta)


def losses_by_hand(z, z_q, beta):
    """Correct, written differently: explicit means of squares, a list."""
    codebook = ((z_q - z.detach()) ** 2).mean()
    commitment = beta * ((z - z_q.detach()) ** 2).mean()
    return [codebook, commitment]


def losses_legacy(z, z_q, beta):
    """Wrong: beta on the codebook term (diffusers' legacy=True)."""
    return beta * F.mse_loss(z_q, z.detach()), F.mse_loss(z, z_q.detach())


def losses_swapped_order(z, z_q, beta):
    """Wrong: (commitment, codebook)."""
    cb, cm = vq_losses(z, z_q, beta)
    return cm, cb


def losses_no_beta(z, z_q, beta):
    """Wrong: no beta."""
    return F.mse_loss(z_q, z.detach()), F.mse_loss(z, z_q.detach())


def losses_wrong_side(z, z_q, beta):
    """Wrong: stop-gradient on the wrong side of both terms."""
    return F.mse_loss(z_q.detach(), z), beta * F.mse_loss(z.detach(), z_q)


def losses_no_detach(z, z_q, beta):
    """Wrong: no stop-gradient."""
    return F.mse_loss(z_q, z), beta * F.mse_loss(z, z_q)


def losses_summed(z, z_q, beta):
    """Wrong: sums instead of means."""
    return F.mse_loss(z_q, z.detach(), reduction="sum"), beta * F.mse_loss(z, z_q.detach(), reduction="sum")


def losses_total(z, z_q, beta):
    """Wrong: one total instead of the two terms."""
    cb, cm = vq_losses(z, z_q, beta)
    return cb + cm


def losses_floats(z, z_q, beta):
    """Wrong: Python floats."""
    cb, cm = vq_losses(z, z_q, beta)
    return cb.item(), cm.item()


# ------------------------------------------------------------------------------------------- image_to_tokens


def to_tokens_reference(images, encoder, codebook):
    """Correct: the check's reference."""
    return image_to_tokens_reference(images, encoder, codebook)


def to_tokens_einops_cdist(images, encoder, codebook):
    """Correct, written differently: einops rearrange and torch.cdist."""
    from einops import rearrange

    z = encoder(images)
    b = z.shape[0]
    flat = rearrange(z, "b d h w -> (b h w) d")
    return torch.cdist(flat, codebook).argmin(dim=1).reshape(b, -1)


def to_tokens_loops(images, encoder, codebook):
    """Correct, written differently: one cell at a time, row by row."""
    z = encoder(images)
    b, _, h, w = z.shape
    out = torch.empty(b, h * w, dtype=torch.long)
    for i in range(b):
        for r in range(h):
            for c in range(w):
                out[i, r * w + c] = ((codebook - z[i, :, r, c]) ** 2).sum(1).argmin()
    return out


def to_tokens_column_major(images, encoder, codebook):
    """Wrong: column-major order."""
    z = encoder(images)
    b, d, h, w = z.shape
    grid = nearest_code(z.permute(0, 2, 3, 1).reshape(-1, d), codebook).view(b, h, w)
    return grid.transpose(1, 2).reshape(b, -1)


def to_tokens_no_permute(images, encoder, codebook):
    """Wrong: (B, D, h, w) reshaped straight to (-1, D)."""
    z = encoder(images)
    return nearest_code(z.reshape(-1, z.shape[1]), codebook).view(z.shape[0], -1)


def to_tokens_argmax(images, encoder, codebook):
    """Wrong: argmax."""
    z = encoder(images)
    b, d = z.shape[:2]
    return torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, d), codebook).argmax(1).view(b, -1)


def to_tokens_grid(images, encoder, codebook):
    """Wrong: the (B, h, w) grid, not a sequence."""
    z = encoder(images)
    b, d, h, w = z.shape
    return nearest_code(z.permute(0, 2, 3, 1).reshape(-1, d), codebook).view(b, h, w)


def to_tokens_batch_interleaved(images, encoder, codebook):
    """Wrong: the batch axis moved after the grid axes before flattening."""
    z = encoder(images)
    b, d, h, w = z.shape
    return nearest_code(z.permute(2, 3, 0, 1).reshape(-1, d), codebook).view(b, -1)


# ------------------------------------------------------------------------------------------- tokens_to_image


def to_image_reference(tokens, decoder, codebook, grid):
    """Correct: the check's reference."""
    return tokens_to_image_reference(tokens, decoder, codebook, grid)


def to_image_embedding(tokens, decoder, codebook, grid):
    """Correct, written differently: F.embedding and einops."""
    from einops import rearrange

    h, w = grid
    return decoder(rearrange(F.embedding(tokens, codebook), "b (h w) d -> b d h w", h=h, w=w))


def to_image_column_major(tokens, decoder, codebook, grid):
    """Wrong: fills the grid column by column."""
    h, w = grid
    v = codebook[tokens]
    return decoder(v.view(tokens.shape[0], w, h, -1).permute(0, 3, 2, 1))


def to_image_no_permute(tokens, decoder, codebook, grid):
    """Wrong: (B, h*w, D) viewed straight as (B, D, h, w)."""
    h, w = grid
    return decoder(codebook[tokens].reshape(tokens.shape[0], -1, h, w))


def to_image_vectors_only(tokens, decoder, codebook, grid):
    """Wrong: forgets the decoder."""
    h, w = grid
    return codebook[tokens].view(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)


def to_image_hw_swapped(tokens, decoder, codebook, grid):
    """Wrong: the grid read as (w, h)."""
    h, w = grid
    return decoder(codebook[tokens].view(tokens.shape[0], w, h, -1).permute(0, 3, 1, 2))


# ------------------------------------------------------------------------------------------- build: quantizer


class QuantizerReference(nn.Module):
    """Correct: the exercise's solution."""

    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(num_codes, code_dim)

    def forward(self, z):
        b, d, h, w = z.shape
        z_last = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = torch.cdist(z_last, self.embedding.weight).argmin(dim=1)
        z_q = self.embedding(indices)
        loss = F.mse_loss(z_q, z_last.detach()) + self.beta * F.mse_loss(z_last, z_q.detach())
        z_q = z_last + (z_q - z_last).detach()
        return z_q.view(b, h, w, d).permute(0, 3, 1, 2), loss, indices.view(b, h, w)


class QuantizerLibraryParts(nn.Module):
    """Correct, written differently: the library's functions, einops, a QuantizerOutput-like object."""

    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(num_codes, code_dim)

    def forward(self, z):
        from types import SimpleNamespace

        from einops import rearrange

        b, d, h, w = z.shape
        z_last = rearrange(z, "b d h w -> b h w d")
        indices = nearest_code(z_last.reshape(-1, d), self.embedding.weight).view(b, h, w)
        z_q = F.embedding(indices, self.embedding.weight)
        cb, cm = vq_losses(z_last, z_q, self.beta)
        return SimpleNamespace(z_q=rearrange(straight_through(z_last, z_q), "b h w d -> b d h w"), loss=cb + cm,
                               indices=indices)


class QuantizerLegacyBeta(QuantizerReference):
    """Wrong: beta on the codebook term (diffusers' legacy=True)."""

    def forward(self, z):
        b, d, h, w = z.shape
        z_last = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = torch.cdist(z_last, self.embedding.weight).argmin(dim=1)
        z_q = self.embedding(indices)
        loss = self.beta * F.mse_loss(z_q, z_last.detach()) + F.mse_loss(z_last, z_q.detach())
        z_q = z_last + (z_q - z_last).detach()
        return z_q.view(b, h, w, d).permute(0, 3, 1, 2), loss, indices.view(b, h, w)


class QuantizerNoStraightThrough(QuantizerReference):
    """Wrong: z_q returned without the straight-through trick."""

    def forward(self, z):
        b, d, h, w = z.shape
        z_last = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = torch.cdist(z_last, self.embedding.weight).argmin(dim=1)
        z_q = self.embedding(indices)
        loss = F.mse_loss(z_q, z_last.detach()) + self.beta * F.mse_loss(z_last, z_q.detach())
        return z_q.view(b, h, w, d).permute(0, 3, 1, 2), loss, indices.view(b, h, w)


class QuantizerLeaksToCodebook(QuantizerReference):
    """Wrong: z + z_q - z.detach(), the decoder's gradient reaches the codebook too."""

    def forward(self, z):
        b, d, h, w = z.shape
        z_last = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = torch.cdist(z_last, self.embedding.weight).argmin(dim=1)
        z_q = self.embedding(indices)
        loss = F.mse_loss(z_q, z_last.detach()) + self.beta * F.mse_loss(z_last, z_q.detach())
        z_q = z_last + z_q - z_last.detach()
        return z_q.view(b, h, w, d).permute(0, 3, 1, 2), loss, indices.view(b, h, w)


class QuantizerNoPermute(QuantizerReference):
    """Wrong: (B, D, H, W) reshaped straight to (-1, D)."""

    def forward(self, z):
        b, d, h, w = z.shape
        flat = z.reshape(-1, d)
        indices = torch.cdist(flat, self.embedding.weight).argmin(dim=1)
        z_q = self.embedding(indices)
        loss = F.mse_loss(z_q, flat.detach()) + self.beta * F.mse_loss(flat, z_q.detach())
        z_q = flat + (z_q - flat).detach()
        return z_q.reshape(b, d, h, w), loss, indices.view(b, h, w)


class QuantizerArgmax(QuantizerReference):
    """Wrong: argmax."""

    def forward(self, z):
        b, d, h, w = z.shape
        z_last = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = torch.cdist(z_last, self.embedding.weight).argmax(dim=1)
        z_q = self.embedding(indices)
        loss = F.mse_loss(z_q, z_last.detach()) + self.beta * F.mse_loss(z_last, z_q.detach())
        z_q = z_last + (z_q - z_last).detach()
        return z_q.view(b, h, w, d).permute(0, 3, 1, 2), loss, indices.view(b, h, w)


class QuantizerFlatIndices(QuantizerReference):
    """Wrong: indices (B*H*W,)."""

    def forward(self, z):
        z_q, loss, indices = super().forward(z)
        return z_q, loss, indices.reshape(-1)


class QuantizerWrongSideLosses(QuantizerReference):
    """Wrong: both stop-gradients on the wrong side (right loss value, wrong gradients)."""

    def forward(self, z):
        b, d, h, w = z.shape
        z_last = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = torch.cdist(z_last, self.embedding.weight).argmin(dim=1)
        z_q = self.embedding(indices)
        loss = F.mse_loss(z_q.detach(), z_last) + self.beta * F.mse_loss(z_last.detach(), z_q)
        z_q = z_last + (z_q - z_last).detach()
        return z_q.view(b, h, w, d).permute(0, 3, 1, 2), loss, indices.view(b, h, w)


class QuantizerOtherNames(nn.Module):
    """Wrong: the codebook as a bare parameter named `codebook` (diffusers' weights would not load)."""

    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))

    def forward(self, z):
        return z, z.sum(), z[:, 0].long()


# ------------------------------------------------------------------------------------------- train: a trained tokenizer


class OracleTokenizer(nn.Module):
    """A stand-in for a trained tokenizer whose quality is known: it recognises the check's held-out images.

    Training a real one takes half a minute (the solution notebook does it and must pass); here the test needs
    tokenizers of a chosen quality in milliseconds. ``encode`` writes the image's index into an 8x8 grid of tokens
    (base ``digits_base``, position j holding (index + j) mod K so that many codes are used); ``decode`` reads it back
    and returns the stored image, blurred by ``blur`` (1: exact).
    """

    def __init__(self, num_codes=128, blur=1, grid=8, float_tokens=False, digits_base=None):
        super().__init__()
        self.quantizer = CodebookQuantizer(num_codes, 4)
        self.num_codes, self.blur, self.grid, self.float_tokens = num_codes, blur, grid, float_tokens
        self.base = digits_base
        self.known = None

    def _lookup(self):
        if self.known is None:
            images = train_tokenizer_eval_data().images
            self.images = images
            self.known = {img.numpy().tobytes(): i for i, img in enumerate(images)}
        return self.known

    def encode(self, images):
        ids = torch.tensor([self._lookup().get(x.numpy().tobytes(), 0) for x in images])
        j = torch.arange(self.grid * self.grid)
        if self.base:  # the index in base `base` digits, then zeros: only `base` codes ever used
            digits = torch.stack([(ids // self.base ** p) % self.base for p in range(4)], dim=1)
            tokens = torch.zeros(len(ids), self.grid * self.grid, dtype=torch.long)
            tokens[:, :4] = digits
        else:  # the index in the first two tokens, then (index + j) mod K: every code used
            tokens = (ids[:, None] + j[None]) % self.num_codes
            tokens[:, 0], tokens[:, 1] = ids % self.num_codes, ids // self.num_codes
        tokens = tokens.view(-1, self.grid, self.grid)
        return tokens.float() if self.float_tokens else tokens

    def decode(self, tokens):
        tokens = tokens.long().reshape(tokens.shape[0], -1)
        if self.base:
            ids = sum(tokens[:, p] * self.base ** p for p in range(4))
        else:
            ids = tokens[:, 0] + self.num_codes * tokens[:, 1]
        self._lookup()
        out = self.images[ids]
        if self.blur > 1:
            out = F.interpolate(F.avg_pool2d(out, self.blur), scale_factor=self.blur, mode="nearest")
        return out


class TokenizerReturnsGridVectors(OracleTokenizer):
    """Wrong: decode returns the code vectors, not images."""

    def decode(self, tokens):
        return self.quantizer.embedding(tokens.long()).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------- stretch: ema_update


def ema_reference(z, indices, counts, sums, decay, eps):
    """Correct."""
    return ema_update_reference(z, indices, counts, sums, decay, eps)


def ema_loops(z, indices, counts, sums, decay, eps):
    """Correct, written differently: index_add_ and bincount, in place on copies."""
    k = counts.shape[0]
    new_counts = counts * decay + (1 - decay) * torch.bincount(indices, minlength=k).to(z.dtype)
    batch_sums = torch.zeros_like(sums).index_add_(0, indices, z)
    new_sums = sums * decay + (1 - decay) * batch_sums
    n = new_counts.sum()
    codebook = new_sums / (n * (new_counts + eps) / (n + k * eps)).unsqueeze(1)
    return codebook, new_counts, new_sums


def ema_swapped_decay(z, indices, counts, sums, decay, eps):
    """Wrong: decay on the batch, 1 - decay on the running average."""
    return ema_update_reference(z, indices, counts, sums, 1 - decay, eps)


def ema_no_smoothing(z, indices, counts, sums, decay, eps):
    """Wrong: plain division by the counts (NaN or inf for a dead code)."""
    _, c, s = ema_update_reference(z, indices, counts, sums, decay, eps)
    return s / c[:, None], c, s


def ema_counts_plus_eps(z, indices, counts, sums, decay, eps):
    """Wrong: counts + eps, no rescaling."""
    _, c, s = ema_update_reference(z, indices, counts, sums, decay, eps)
    return s / (c + eps)[:, None], c, s


def ema_batch_means(z, indices, counts, sums, decay, eps):
    """Wrong: the codebook from this batch only."""
    _, c, s = ema_update_reference(z, indices, counts, sums, decay, eps)
    k = counts.shape[0]
    bc = torch.bincount(indices, minlength=k).to(z.dtype)
    bs = torch.zeros_like(sums).index_add_(0, indices, z)
    n = bc.sum()
    return bs / ((bc + eps) / (n + k * eps) * n)[:, None], c, s


CASES = {
    "ch10.nearest_code": {
        "correct": [nearest_library, nearest_cdist, nearest_loops],
        "wrong": {"argmax": nearest_argmax, "dot product": nearest_dot_product, "cosine": nearest_cosine, "L1": nearest_l1,
                  "wrong axis": nearest_wrong_axis, "vectors": nearest_returns_vectors, "float": nearest_float,
                  "keepdim": nearest_keepdim},
        "diagnoses": {"argmax": (nearest_argmax, "FARTHEST"), "dot product": (nearest_dot_product, "dot product"),
                      "wrong axis": (nearest_wrong_axis, "codes axis"), "vectors": (nearest_returns_vectors, "VECTORS"),
                      "cosine": (nearest_cosine, "cosine"), "L1": (nearest_l1, "Manhattan")},
    },
    "ch10.straight_through": {
        "correct": [ste_library, ste_two_detaches, ste_autograd_function],
        "wrong": {"z_q as is": ste_returns_zq, "wrong side": ste_wrong_side, "no detach": ste_no_detach,
                  "leaks to codebook": ste_leaks_to_codebook, "all detached": ste_everything_detached, "returns z": ste_returns_z},
        "diagnoses": {"z_q as is": (ste_returns_zq, "returned z_q itself"), "wrong side": (ste_wrong_side, "wrong side"),
                      "no detach": (ste_no_detach, "wrong side"), "leaks": (ste_leaks_to_codebook, "ALSO z_q"),
                      "all detached": (ste_everything_detached, "no gradient at all"), "returns z": (ste_returns_z, "values of z")},
    },
    "ch10.vq_losses": {
        "correct": [losses_library, losses_by_hand],
        "wrong": {"legacy beta": losses_legacy, "swapped order": losses_swapped_order, "no beta": losses_no_beta,
                  "wrong side": losses_wrong_side, "no detach": losses_no_detach, "summed": losses_summed,
                  "total": losses_total, "floats": losses_floats},
        "diagnoses": {"legacy beta": (losses_legacy, "legacy=True"), "swapped order": (losses_swapped_order, "other order"),
                      "wrong side": (losses_wrong_side, "wrong side"), "no detach": (losses_no_detach, "also sends a gradient"),
                      "summed": (losses_summed, "SUMMED"), "total": (losses_total, "TWO losses")},
    },
    "ch10.image_to_tokens": {
        "correct": [to_tokens_reference, to_tokens_einops_cdist, to_tokens_loops],
        "wrong": {"column-major": to_tokens_column_major, "no permute": to_tokens_no_permute, "argmax": to_tokens_argmax,
                  "grid": to_tokens_grid, "batch interleaved": to_tokens_batch_interleaved},
        "diagnoses": {"column-major": (to_tokens_column_major, "COLUMN-major"), "no permute": (to_tokens_no_permute, "mix channels"),
                      "grid": (to_tokens_grid, "token GRID"), "batch": (to_tokens_batch_interleaved, "interleaved")},
    },
    "ch10.tokens_to_image": {
        "correct": [to_image_reference, to_image_embedding],
        "wrong": {"column-major": to_image_column_major, "no permute": to_image_no_permute, "vectors only": to_image_vectors_only,
                  "h w swapped": to_image_hw_swapped},
        "diagnoses": {"column-major": (to_image_column_major, "COLUMN by column"), "no permute": (to_image_no_permute, "scrambles"),
                      "vectors": (to_image_vectors_only, "run the decoder")},
    },
    "ch10.quantizer": {
        "correct": [QuantizerReference, QuantizerLibraryParts],
        "wrong": {"legacy beta": QuantizerLegacyBeta, "no straight-through": QuantizerNoStraightThrough,
                  "leaks to codebook": QuantizerLeaksToCodebook, "no permute": QuantizerNoPermute, "argmax": QuantizerArgmax,
                  "flat indices": QuantizerFlatIndices, "wrong-side losses": QuantizerWrongSideLosses,
                  "other names": QuantizerOtherNames},
        "diagnoses": {"legacy beta": (QuantizerLegacyBeta, "legacy=True"),
                      "no straight-through": (QuantizerNoStraightThrough, "without the straight-through trick"),
                      "leaks": (QuantizerLeaksToCodebook, "also reaches the codebook"),
                      "no permute": (QuantizerNoPermute, "mix channels"), "argmax": (QuantizerArgmax, "farthest"),
                      "flat": (QuantizerFlatIndices, "one flat row"), "wrong side": (QuantizerWrongSideLosses, "stop-gradients swapped"),
                      "names": (QuantizerOtherNames, "embedding.weight")},
    },
    "ch10.train_tokenizer": {
        "correct": [OracleTokenizer(), OracleTokenizer(num_codes=512)],
        "wrong": {"blurry": OracleTokenizer(blur=8), "collapsed codebook": OracleTokenizer(digits_base=4),
                  "float tokens": OracleTokenizer(float_tokens=True), "too many tokens": OracleTokenizer(grid=16),
                  "decodes to vectors": TokenizerReturnsGridVectors(), "the class": OracleTokenizer},
        "diagnoses": {"blurry": (OracleTokenizer(blur=8), "PSNR"), "collapsed": (OracleTokenizer(digits_base=4), "dead"),
                      "float": (OracleTokenizer(float_tokens=True), "discrete"),
                      "too many": (OracleTokenizer(grid=16), "tokens per image")},
    },
    "ch10.ema_update": {
        "correct": [ema_reference, ema_loops],
        "wrong": {"swapped decay": ema_swapped_decay, "no smoothing": ema_no_smoothing, "counts + eps": ema_counts_plus_eps,
                  "batch means": ema_batch_means},
        "diagnoses": {"swapped": (ema_swapped_decay, "wrong side"), "no smoothing": (ema_no_smoothing, "divided by zero"),
                      "plus eps": (ema_counts_plus_eps, "without the rescaling"), "batch": (ema_batch_means, "no moving average")},
    },
    "ch10.q1": {"answer": "c", "wrong": ["a", "b", "d"]},
    "ch10.q2": {"answer": "b", "wrong": ["a", "c", "d"]},
    "ch10.q3": {"answer": "b", "wrong": ["a", "c", "d"]},
}
