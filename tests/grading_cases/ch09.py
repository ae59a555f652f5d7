"""Grader cases for chapter 9: correct versions written several ways, and the mistakes learners make.

Besides ``correct`` and ``wrong``, an exercise may list ``diagnoses``: ``{label: (answer, words)}``, a
wrong answer whose ``fail`` message must contain ``words`` (the check names that mistake, not another).
"""


import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.grading.checks.ch09 import _frozen_generator_and_judge, train_projector_eval_data
from mmllm_course.output import OutputProjector, OutputProjectorConfig, conditioning_l2_loss, signal_token_labels

IGNORE = -100

# ------------------------------------------------------------------------------------------- signal_labels


def labels_reference(input_ids, signal_ids, keep_ids=()):
    """Correct: the library's."""
    return signal_token_labels(input_ids, signal_ids, keep_ids)


def labels_loop(input_ids, signal_ids, keep_ids=()):
    """Correct, written differently: a clone, then -100 wherever the token is none of the kept ids."""
    labels = input_ids.clone()
    keep = torch.zeros_like(input_ids, dtype=torch.bool)
    for token in list(signal_ids) + list(keep_ids):
        keep |= input_ids == token
    labels[~keep] = IGNORE
    return labels


def labels_python(input_ids, signal_ids, keep_ids=()):
    """Correct, written differently: lists of lists."""
    kept = set(signal_ids) | set(keep_ids)
    return torch.tensor([[t if t in kept else IGNORE for t in row] for row in input_ids.tolist()])


def labels_not_masked(input_ids, signal_ids, keep_ids=()):
    """Wrong: the ids themselves."""
    return input_ids.clone()


def labels_masked_with_zero(input_ids, signal_ids, keep_ids=()):
    """Wrong: 0 instead of -100."""
    return torch.where(torch.isin(input_ids, torch.tensor(list(signal_ids) + list(keep_ids))), input_ids, 0)


def labels_shifted(input_ids, signal_ids, keep_ids=()):
    """Wrong: shifted by hand, as for a hand-written next-token loss."""
    right = labels_reference(input_ids, signal_ids, keep_ids)
    return torch.cat([right[:, 1:], torch.full_like(right[:, :1], IGNORE)], dim=1)


def labels_ignore_keep(input_ids, signal_ids, keep_ids=()):
    """Wrong: keep_ids forgotten."""
    return labels_reference(input_ids, signal_ids, ())


def labels_inverted(input_ids, signal_ids, keep_ids=()):
    """Wrong: the prompt kept, the signal tokens masked."""
    hit = torch.isin(input_ids, torch.tensor(list(signal_ids) + list(keep_ids)))
    return torch.where(hit, IGNORE, input_ids)


def labels_pad_only(input_ids, signal_ids, keep_ids=()):
    """Wrong: only the padding masked (the attention mask's job)."""
    return input_ids.masked_fill(input_ids == 0, IGNORE)


def labels_in_place(input_ids, signal_ids, keep_ids=()):
    """Wrong: the right labels, written into input_ids itself."""
    hit = torch.isin(input_ids, torch.tensor(list(signal_ids) + list(keep_ids)))
    input_ids[~hit] = IGNORE
    return input_ids


def labels_float(input_ids, signal_ids, keep_ids=()):
    """Wrong: float labels."""
    return labels_reference(input_ids, signal_ids, keep_ids).float()


# ------------------------------------------------------------------------------------------- projector_forward


def forward_reference(projector, signal_hidden):
    """Correct: as the library."""
    x = projector.in_proj(signal_hidden)
    queries = projector.queries.expand(x.shape[0], -1, -1)
    return projector.out_proj(projector.transformer(src=x, tgt=queries))


def forward_encoder_decoder(projector, signal_hidden):
    """Correct, written differently: the encoder and the decoder called one after the other, repeat for the queries."""
    memory = projector.transformer.encoder(projector.in_proj(signal_hidden))
    queries = projector.queries.repeat(signal_hidden.shape[0], 1, 1)
    return projector.out_proj(projector.transformer.decoder(queries, memory))


def forward_not_expanded(projector, signal_hidden):
    """Wrong: the (1, L, W) queries straight into the transformer."""
    return projector.out_proj(projector.transformer(src=projector.in_proj(signal_hidden), tgt=projector.queries))


def forward_swapped(projector, signal_hidden):
    """Wrong: the queries as the encoder's input, the signal states as the decoder's."""
    x = projector.in_proj(signal_hidden)
    return projector.out_proj(projector.transformer(src=projector.queries.expand(x.shape[0], -1, -1), tgt=x))


def forward_no_out_proj(projector, signal_hidden):
    """Wrong: stops at the transformer's width."""
    x = projector.in_proj(signal_hidden)
    return projector.transformer(src=x, tgt=projector.queries.expand(x.shape[0], -1, -1))


def forward_causal(projector, signal_hidden):
    """Wrong: a causal mask on the queries, as nn.Transformer's docs show for text."""
    x = projector.in_proj(signal_hidden)
    q = projector.queries.expand(x.shape[0], -1, -1)
    mask = nn.Transformer.generate_square_subsequent_mask(q.shape[1])
    return projector.out_proj(projector.transformer(src=x, tgt=q, tgt_mask=mask))


def forward_decoder_only(projector, signal_hidden):
    """Wrong: no encoder."""
    x = projector.in_proj(signal_hidden)
    return projector.out_proj(projector.transformer.decoder(projector.queries.expand(x.shape[0], -1, -1), x))


def forward_mean(projector, signal_hidden):
    """Wrong: the signal states averaged first."""
    x = projector.in_proj(signal_hidden).mean(dim=1, keepdim=True)
    return projector.out_proj(projector.transformer(src=x, tgt=projector.queries.expand(x.shape[0], -1, -1)))


def forward_detached(projector, signal_hidden):
    """Wrong: the right values, cut off from the graph."""
    with torch.no_grad():
        return forward_reference(projector, signal_hidden)


# ------------------------------------------------------------------------------------------- output_projector (build)


def _transformer(width, heads, layers, dropout, **changes):
    kwargs = dict(d_model=width, nhead=heads, num_encoder_layers=layers, num_decoder_layers=layers,
                  dim_feedforward=4 * width, dropout=dropout, batch_first=True, norm_first=True)
    kwargs.update(changes)
    return nn.Transformer(**kwargs)


class ProjectorReference(nn.Module):
    """Correct: the library's layout."""

    def __init__(self, lm_dim, cond_dim, num_queries, width=64, heads=4, layers=2, dropout=0.1, **changes):
        super().__init__()
        self.in_proj = nn.Linear(lm_dim, width)
        self.queries = nn.Parameter(torch.randn(1, num_queries, width) * 0.02)
        self.transformer = _transformer(width, heads, layers, dropout, **changes)
        self.out_proj = nn.Linear(width, cond_dim)

    def forward(self, signal_hidden):
        return forward_reference(self, signal_hidden)


class ProjectorLibraryParts(OutputProjector):
    """Correct, written differently: the library's class behind the exercise's constructor."""

    def __init__(self, lm_dim, cond_dim, num_queries, width=64, heads=4, layers=2, dropout=0.1):
        super().__init__(OutputProjectorConfig(lm_dim, cond_dim, num_queries, width, heads, layers, dropout))


class ProjectorTwoCalls(ProjectorReference):
    """Correct, written differently: encoder then decoder, unit-variance queries."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.queries = nn.Parameter(torch.randn_like(self.queries))

    def forward(self, signal_hidden):
        return forward_encoder_decoder(self, signal_hidden)


class ProjectorPostNorm(ProjectorReference):
    """Wrong: nn.Transformer's default post-norm."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, norm_first=False, **kwargs)


class ProjectorSequenceFirst(ProjectorReference):
    """Wrong: batch_first left at False."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, batch_first=False, **kwargs)


class ProjectorDefaultFeedForward(ProjectorReference):
    """Wrong: nn.Transformer's default dim_feedforward (2048)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, dim_feedforward=2048, **kwargs)


class ProjectorFixedDropout(ProjectorReference):
    """Wrong: dropout 0.1 whatever the argument says."""

    def __init__(self, lm_dim, cond_dim, num_queries, width=64, heads=4, layers=2, dropout=0.1):
        super().__init__(lm_dim, cond_dim, num_queries, width, heads, layers, 0.1)


class ProjectorZeroQueries(ProjectorReference):
    """Wrong: the queries start at zero, all alike."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.queries = nn.Parameter(torch.zeros_like(self.queries))


class ProjectorCausal(ProjectorReference):
    """Wrong: a causal mask on the queries."""

    def forward(self, signal_hidden):
        return forward_causal(self, signal_hidden)


class ProjectorNotExpanded(ProjectorReference):
    """Wrong: the queries not expanded over the batch."""

    def forward(self, signal_hidden):
        return forward_not_expanded(self, signal_hidden)


class ProjectorRenamed(ProjectorReference):
    """Wrong: the output linear under another name."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head = self.out_proj
        del self.out_proj

    def forward(self, signal_hidden):
        x = self.in_proj(signal_hidden)
        return self.head(self.transformer(src=x, tgt=self.queries.expand(x.shape[0], -1, -1)))


# ------------------------------------------------------------------------------------------- l2_loss


def l2_reference(pred, target):
    """Correct: the library's."""
    return conditioning_l2_loss(pred, target)


def l2_norm_squared(pred, target):
    """Correct, written differently: a vector norm squared, then the mean."""
    return torch.linalg.vector_norm(target - pred, dim=-1).pow(2).mean()


def l2_mse_none(pred, target):
    """Correct, written differently: mse_loss without reduction, summed over the features."""
    b, n, _ = pred.shape
    return F.mse_loss(pred, target, reduction="none").sum(dim=2).sum() / (b * n)


def l2_mse(pred, target):
    """Wrong: F.mse_loss, a mean over D too."""
    return F.mse_loss(pred, target)


def l2_token_axis(pred, target):
    """Wrong: summed over the tokens."""
    return ((pred - target) ** 2).sum(dim=1).mean()


def l2_not_squared(pred, target):
    """Wrong: the distance, not its square."""
    return (pred - target).norm(dim=-1).mean()


def l2_sum(pred, target):
    """Wrong: the sum of everything."""
    return ((pred - target) ** 2).sum()


def l2_batch_mean_only(pred, target):
    """Wrong: averaged over the batch only."""
    return ((pred - target) ** 2).sum(dim=(1, 2)).mean()


def l2_item(pred, target):
    """Wrong: the right number, cut off from the graph."""
    return torch.tensor(((pred - target) ** 2).sum(-1).mean().item(), dtype=pred.dtype, requires_grad=True)


# ------------------------------------------------------------------------------------------- ddpm_training_example


def ddpm_reference(scheduler, latents, noise, timesteps):
    """Correct: diffusers' own add_noise and get_velocity."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        return noisy, scheduler.get_velocity(latents, noise, timesteps)
    return noisy, noise


def ddpm_by_hand(scheduler, latents, noise, timesteps):
    """Correct, written differently: the formulas, alpha-bar in float64 then cast."""
    a = scheduler.alphas_cumprod.double()[timesteps].view(-1, 1, 1, 1)
    x, e = latents.double(), noise.double()
    noisy = a.sqrt() * x + (1 - a).sqrt() * e
    target = a.sqrt() * e - (1 - a).sqrt() * x if scheduler.config.prediction_type == "v_prediction" else e
    return noisy.to(latents.dtype), target.to(latents.dtype)


def ddpm_from_betas(scheduler, latents, noise, timesteps):
    """Correct, written differently: alpha-bar as the cumulative product of 1 - beta, computed here."""
    abar = torch.cumprod(1 - scheduler.betas, dim=0)[timesteps][:, None, None, None].to(latents.dtype)
    noisy = abar ** 0.5 * latents + (1 - abar) ** 0.5 * noise
    if scheduler.config.prediction_type == "epsilon":
        return noisy, noise.clone()
    return noisy, abar ** 0.5 * noise - (1 - abar) ** 0.5 * latents


def _ddpm_wrong(alpha="abar", sqrt_signal=True, sqrt_noise=True, swap=False, shift=0, one_t=False, target="right"):
    def fn(scheduler, latents, noise, timesteps):
        t = (timesteps - shift).clamp(min=0)
        if one_t:
            t = t[:1].expand(len(t))
        table = scheduler.alphas_cumprod if alpha == "abar" else scheduler.alphas
        a = table[t].view(-1, 1, 1, 1).to(latents.dtype)
        x, e = (noise, latents) if swap else (latents, noise)
        noisy = (a.sqrt() if sqrt_signal else a) * x + ((1 - a).sqrt() if sqrt_noise else 1 - a) * e
        right = ddpm_reference(scheduler, latents, noise, timesteps)[1]
        ab = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1).to(latents.dtype)
        v = ab.sqrt() * noise - (1 - ab).sqrt() * latents
        targets = {"right": right, "eps": noise, "flipped": -right, "flow": noise - latents, "v": v}
        return noisy, targets[target]

    return fn


ddpm_alpha_t = _ddpm_wrong(alpha="alpha")
ddpm_no_sqrt = _ddpm_wrong(sqrt_signal=False, sqrt_noise=False)
ddpm_noise_no_sqrt = _ddpm_wrong(sqrt_noise=False)
ddpm_swapped = _ddpm_wrong(swap=True)
ddpm_off_by_one = _ddpm_wrong(shift=1)
ddpm_one_timestep = _ddpm_wrong(one_t=True)
ddpm_always_epsilon = _ddpm_wrong(target="eps")
ddpm_always_v = _ddpm_wrong(target="v")
ddpm_v_flipped = _ddpm_wrong(target="flipped")
ddpm_flow_velocity = _ddpm_wrong(target="flow")


def ddpm_noisy_only(scheduler, latents, noise, timesteps):
    """Wrong: only the noisy latents."""
    return scheduler.add_noise(latents, noise, timesteps)


# ------------------------------------------------------------------------------------------- ddim_step


def ddim_reference(scheduler, model_output, timestep, prev_timestep, sample):
    """Correct: the formulas of DDIMScheduler.step with eta = 0."""
    a_t = scheduler.alphas_cumprod[timestep]
    a_prev = scheduler.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else scheduler.final_alpha_cumprod
    if scheduler.config.prediction_type == "v_prediction":
        x0 = a_t.sqrt() * sample - (1 - a_t).sqrt() * model_output
        eps = a_t.sqrt() * model_output + (1 - a_t).sqrt() * sample
    else:
        eps = model_output
        x0 = (sample - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def ddim_via_eps(scheduler, model_output, timestep, prev_timestep, sample):
    """Correct, written differently: float64, eps recovered from x0, and alpha-bar 1.0 past the end."""
    abar = scheduler.alphas_cumprod.double()
    a_t = abar[timestep]
    a_prev = abar[prev_timestep] if prev_timestep >= 0 else torch.tensor(1.0, dtype=torch.float64)
    x, o = sample.double(), model_output.double()
    if scheduler.config.prediction_type == "v_prediction":
        x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * o
    else:
        x0 = (x - (1 - a_t).sqrt() * o) / a_t.sqrt()
    eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    return (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).to(sample.dtype)


def _ddim_wrong(kind):
    def fn(scheduler, model_output, timestep, prev_timestep, sample):
        table = scheduler.alphas if kind == "alpha" else scheduler.alphas_cumprod
        a_t = table[timestep]
        if kind == "wrap":
            a_prev = table[prev_timestep]
        elif kind == "t_minus_1":
            a_prev = table[timestep - 1]
        else:
            a_prev = table[prev_timestep] if prev_timestep >= 0 else torch.tensor(1.0)
        v_model = scheduler.config.prediction_type == "v_prediction"
        if kind == "other_type":
            v_model = not v_model
        if v_model:
            x0 = a_t.sqrt() * sample - (1 - a_t).sqrt() * model_output
            eps = a_t.sqrt() * model_output + (1 - a_t).sqrt() * sample
        else:
            eps = model_output
            x0 = (sample - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if kind == "x0":
            return x0
        if kind == "no_sqrt":
            return a_prev * x0 + (1 - a_prev) * eps
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps

    return fn


ddim_other_type = _ddim_wrong("other_type")
ddim_alpha_t = _ddim_wrong("alpha")
ddim_wraps = _ddim_wrong("wrap")
ddim_t_minus_1 = _ddim_wrong("t_minus_1")
ddim_returns_x0 = _ddim_wrong("x0")
ddim_no_sqrt = _ddim_wrong("no_sqrt")


def ddim_output_object(scheduler, model_output, timestep, prev_timestep, sample):
    """Wrong: the scheduler's output object, not the tensor."""
    return scheduler.step(model_output, timestep, sample, eta=0.0)


# ------------------------------------------------------------------------------------------- ddpm_step


def ddpm_step_reference(scheduler, model_output, timestep, sample, noise):
    """Correct: the posterior mean plus its standard deviation times the noise."""
    a_t = scheduler.alphas_cumprod[timestep]
    a_prev = scheduler.alphas_cumprod[timestep - 1] if timestep > 0 else torch.tensor(1.0)
    alpha = a_t / a_prev
    beta = 1 - alpha
    if scheduler.config.prediction_type == "v_prediction":
        x0 = a_t.sqrt() * sample - (1 - a_t).sqrt() * model_output
    else:
        x0 = (sample - (1 - a_t).sqrt() * model_output) / a_t.sqrt()
    mean = a_prev.sqrt() * beta / (1 - a_t) * x0 + alpha.sqrt() * (1 - a_prev) / (1 - a_t) * sample
    if timestep == 0:
        return mean
    return mean + ((1 - a_prev) / (1 - a_t) * beta).sqrt() * noise


def ddpm_step_from_eps(scheduler, model_output, timestep, sample, noise):
    """Correct, written differently: DDPM's own form, (x_t - beta_t / sqrt(1 - a_t) eps) / sqrt(alpha_t) + sigma_t z."""
    abar = scheduler.alphas_cumprod.double()
    a_t = abar[timestep]
    a_prev = abar[timestep - 1] if timestep > 0 else torch.tensor(1.0, dtype=torch.float64)
    alpha = a_t / a_prev
    x, o = sample.double(), model_output.double()
    eps = a_t.sqrt() * o + (1 - a_t).sqrt() * x if scheduler.config.prediction_type == "v_prediction" else o
    mean = (x - (1 - alpha) / (1 - a_t).sqrt() * eps) / alpha.sqrt()
    sigma = ((1 - a_prev) / (1 - a_t) * (1 - alpha)).sqrt()
    return (mean + (sigma * noise.double() if timestep > 0 else 0.0)).to(sample.dtype)


def _ddpm_step_wrong(kind):
    def fn(scheduler, model_output, timestep, sample, noise):
        a_t = scheduler.alphas_cumprod[timestep]
        a_prev = scheduler.alphas_cumprod[timestep - 1] if timestep > 0 else torch.tensor(1.0)
        alpha = a_t if kind == "abar" else a_t / a_prev
        beta = 1 - alpha
        v_model = (scheduler.config.prediction_type == "v_prediction") != (kind == "other_type")
        if v_model:
            x0 = a_t.sqrt() * sample - (1 - a_t).sqrt() * model_output
        else:
            x0 = (sample - (1 - a_t).sqrt() * model_output) / a_t.sqrt()
        if kind == "x0":
            return x0
        mean = a_prev.sqrt() * beta / (1 - a_t) * x0 + alpha.sqrt() * (1 - a_prev) / (1 - a_t) * sample
        variance = (1 - a_prev) / (1 - a_t) * beta
        if kind == "mean" or timestep == 0:
            return mean
        sigma = {"large": beta.sqrt(), "variance": variance}.get(kind, variance.sqrt())
        return mean + sigma * noise

    return fn


ddpm_step_other_type = _ddpm_step_wrong("other_type")
ddpm_step_abar = _ddpm_step_wrong("abar")
ddpm_step_no_noise = _ddpm_step_wrong("mean")
ddpm_step_fixed_large = _ddpm_step_wrong("large")
ddpm_step_variance = _ddpm_step_wrong("variance")
ddpm_step_returns_x0 = _ddpm_step_wrong("x0")


def ddpm_step_noise_everywhere(scheduler, model_output, timestep, sample, noise):
    """Wrong: the scheduler's own step with its own noise, not the noise given."""
    return scheduler.step(model_output, timestep, sample).prev_sample


# ------------------------------------------------------------------------------------------- train_projector


class OracleProjector(nn.Module):
    """Knows the caption of each of the check's requests (looked up by its features): the true conditioning.

    ``wrong_every=n`` gives every n-th request another caption's conditioning; ``noise`` adds Gaussian noise.
    """

    def __init__(self, wrong_every: int = 0, noise: float = 0.0):
        super().__init__()
        self.wrong_every, self.noise, self.known = wrong_every, noise, None
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so that it is a module with a device

    def forward(self, signal_hidden):
        if self.known is None:  # on first use, not when the cases are collected (it loads the LM and the generator)
            features, captions = train_projector_eval_data()
            generator, _ = _frozen_generator_and_judge()
            self.truth = generator.encode_prompt(list(captions))
            self.known = {f.numpy().tobytes(): i for i, f in enumerate(features)}
        rows = []
        for f in signal_hidden:
            i = self.known[f.numpy().tobytes()]
            if self.wrong_every and i % self.wrong_every == 0:
                i = (i + 7) % len(self.truth)  # another request's caption
            rows.append(self.truth[i])
        out = torch.stack(rows) * self.scale
        if self.noise:
            out = out + self.noise * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
        return out


def oracle_function():
    """Correct: a zero-argument function that returns the trained projector."""
    return OracleProjector(noise=0.05)


def untrained_projector():
    """Wrong: a fresh projector, never trained."""
    torch.manual_seed(0)
    return OutputProjector(OutputProjectorConfig(lm_dim=64, cond_dim=64, num_queries=16, dropout=0.0))


class MeanProjector(nn.Module):
    """Wrong: the average conditioning for every request (a collapsed projector)."""

    def forward(self, signal_hidden):
        generator, _ = _frozen_generator_and_judge()
        mean = generator.encode_prompt(list(train_projector_eval_data()[1])).mean(0)
        return mean.expand(signal_hidden.shape[0], -1, -1).clone()


class SignalShapedProjector(nn.Module):
    """Wrong: one output row per signal token, (B, 4, 64)."""

    def forward(self, signal_hidden):
        return signal_hidden[..., :64]


def projector_needs_arguments(features, targets):
    """Wrong: the training function itself, not its result."""
    return OracleProjector()


# ------------------------------------------------------------------------------------------- guidance


def guidance_reference(unet, latents, timestep, conditioning, null_conditioning, guidance_scale):
    """Correct: one pass over the doubled batch."""
    out = unet(torch.cat([latents, latents]), timestep, encoder_hidden_states=torch.cat([null_conditioning, conditioning])).sample
    uncond, cond = out.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def guidance_two_passes(unet, latents, timestep, conditioning, null_conditioning, guidance_scale):
    """Correct, written differently: two passes, written as a weighted sum."""
    cond = unet(latents, timestep, encoder_hidden_states=conditioning).sample
    uncond = unet(latents, timestep, encoder_hidden_states=null_conditioning).sample
    return (1 - guidance_scale) * uncond + guidance_scale * cond


def _guidance_wrong(combine):
    def fn(unet, latents, timestep, conditioning, null_conditioning, guidance_scale):
        c = unet(latents, timestep, encoder_hidden_states=conditioning).sample
        u = unet(latents, timestep, encoder_hidden_states=null_conditioning).sample
        return combine(u, c, guidance_scale)

    return fn


guidance_from_cond = _guidance_wrong(lambda u, c, w: c + w * (c - u))
guidance_paper_convention = _guidance_wrong(lambda u, c, w: (1 + w) * c - w * u)  # the same as guidance_from_cond
guidance_swapped = _guidance_wrong(lambda u, c, w: c + w * (u - c))
guidance_none = _guidance_wrong(lambda u, c, w: c)
guidance_scaled_cond = _guidance_wrong(lambda u, c, w: w * c)
guidance_uncond_plus = _guidance_wrong(lambda u, c, w: u + w * c)


def guidance_output_object(unet, latents, timestep, conditioning, null_conditioning, guidance_scale):
    """Wrong: the UNet's output object."""
    return unet(latents, timestep, encoder_hidden_states=conditioning)


def guidance_doubled(unet, latents, timestep, conditioning, null_conditioning, guidance_scale):
    """Wrong: both halves returned."""
    both = torch.cat([null_conditioning, conditioning])
    return unet(torch.cat([latents, latents]), timestep, encoder_hidden_states=both).sample


CASES = {
    "ch09.signal_labels": {
        "correct": [labels_reference, labels_loop, labels_python],
        "wrong": {
            "not masked": labels_not_masked,
            "masked with 0": labels_masked_with_zero,
            "shifted by hand": labels_shifted,
            "keep_ids ignored": labels_ignore_keep,
            "inverted": labels_inverted,
            "padding only": labels_pad_only,
            "in place": labels_in_place,
            "float labels": labels_float,
        },
        "diagnoses": {
            "masked with 0": (labels_masked_with_zero, "masked with 0 instead of -100"),
            "shifted": (labels_shifted, "shifted by hand"),
            "keep_ids": (labels_ignore_keep, "keep_ids"),
            "not masked": (labels_not_masked, "nothing masked"),
            "in place": (labels_in_place, "in place"),
        },
    },
    "ch09.projector_forward": {
        "correct": [forward_reference, forward_encoder_decoder],
        "wrong": {
            "queries not expanded": forward_not_expanded,
            "src and tgt swapped": forward_swapped,
            "no out_proj": forward_no_out_proj,
            "causal mask": forward_causal,
            "decoder only": forward_decoder_only,
            "mean of the signal states": forward_mean,
            "detached": forward_detached,
        },
        "diagnoses": {
            "not expanded": (forward_not_expanded, "expand the queries over the batch"),
            "swapped": (forward_swapped, "one row per SIGNAL token"),
            "causal": (forward_causal, "causal tgt_mask"),
            "decoder only": (forward_decoder_only, "the decoder alone"),
            "no out_proj": (forward_no_out_proj, "out_proj"),
        },
    },
    "ch09.output_projector": {
        "correct": [ProjectorReference, ProjectorLibraryParts, ProjectorTwoCalls],
        "wrong": {
            "post-norm": ProjectorPostNorm,
            "batch_first=False": ProjectorSequenceFirst,
            "default dim_feedforward": ProjectorDefaultFeedForward,
            "dropout ignored": ProjectorFixedDropout,
            "zero queries": ProjectorZeroQueries,
            "causal mask": ProjectorCausal,
            "queries not expanded": ProjectorNotExpanded,
            "renamed out_proj": ProjectorRenamed,
        },
        "diagnoses": {
            "post-norm": (ProjectorPostNorm, "norm_first=True"),
            "sequence first": (ProjectorSequenceFirst, "batch_first=True"),
            "zero queries": (ProjectorZeroQueries, "identical"),
            "dropout": (ProjectorFixedDropout, "dropout=0.0"),
            "feed-forward": (ProjectorDefaultFeedForward, "wrong shape"),
            "causal": (ProjectorCausal, "causal tgt_mask"),
            "not expanded": (ProjectorNotExpanded, "expand the queries"),
        },
    },
    "ch09.l2_loss": {
        "correct": [l2_reference, l2_norm_squared, l2_mse_none],
        "wrong": {
            "mse": l2_mse,
            "token axis": l2_token_axis,
            "not squared": l2_not_squared,
            "sum": l2_sum,
            "batch mean only": l2_batch_mean_only,
            "item": l2_item,
        },
        "diagnoses": {
            "mse": (l2_mse, "F.mse_loss"),
            "token axis": (l2_token_axis, "TOKEN axis"),
            "not squared": (l2_not_squared, "not squared"),
            "detached": (l2_item, "autograd history"),
        },
    },
    "ch09.ddpm_training_example": {
        "correct": [ddpm_reference, ddpm_by_hand, ddpm_from_betas],
        "wrong": {
            "alpha_t": ddpm_alpha_t,
            "no square roots": ddpm_no_sqrt,
            "noise weight without its root": ddpm_noise_no_sqrt,
            "latents and noise swapped": ddpm_swapped,
            "off by one": ddpm_off_by_one,
            "one timestep": ddpm_one_timestep,
            "epsilon target always": ddpm_always_epsilon,
            "v target always": ddpm_always_v,
            "v flipped": ddpm_v_flipped,
            "flow velocity": ddpm_flow_velocity,
            "noisy only": ddpm_noisy_only,
        },
        "diagnoses": {
            "alpha_t": (ddpm_alpha_t, "alpha-BAR_t"),
            "no sqrt": (ddpm_no_sqrt, "without their square roots"),
            "epsilon for v": (ddpm_always_epsilon, "prediction_type is 'v_prediction'"),
            "v for epsilon": (ddpm_always_v, "prediction_type is 'epsilon'"),
            "one timestep": (ddpm_one_timestep, "its own timestep"),
            "flipped": (ddpm_v_flipped, "sign flipped"),
        },
    },
    "ch09.ddim_step": {
        "correct": [ddim_reference, ddim_via_eps],
        "wrong": {
            "wrong prediction type": ddim_other_type,
            "alpha_t": ddim_alpha_t,
            "index -1 wraps": ddim_wraps,
            "t - 1": ddim_t_minus_1,
            "returns x0": ddim_returns_x0,
            "no square roots": ddim_no_sqrt,
            "output object": ddim_output_object,
        },
        "diagnoses": {
            "v read as epsilon": (ddim_other_type, "read as the noise"),
            "wraps": (ddim_wraps, "index -1"),
            "x0": (ddim_returns_x0, "predicted clean latents"),
            "t - 1": (ddim_t_minus_1, "t - 1"),
            "object": (ddim_output_object, ".prev_sample"),
        },
    },
    "ch09.ddpm_step": {
        "correct": [ddpm_step_reference, ddpm_step_from_eps],
        "wrong": {
            "wrong prediction type": ddpm_step_other_type,
            "alpha-bar for alpha_t": ddpm_step_abar,
            "no noise": ddpm_step_no_noise,
            "fixed_large": ddpm_step_fixed_large,
            "variance times noise": ddpm_step_variance,
            "returns x0": ddpm_step_returns_x0,
            "its own noise": ddpm_step_noise_everywhere,
        },
        "diagnoses": {
            "no noise": (ddpm_step_no_noise, "no noise added"),
            "fixed_large": (ddpm_step_fixed_large, "fixed_large"),
            "variance": (ddpm_step_variance, "VARIANCE"),
            "abar": (ddpm_step_abar, "this step's alpha_t"),
        },
    },
    "ch09.train_projector": {
        "correct": [OracleProjector(), OracleProjector(noise=0.1), oracle_function],
        "wrong": {
            "half wrong": OracleProjector(wrong_every=2),
            "untrained": untrained_projector(),
            "collapsed to the mean": MeanProjector(),
            "one row per signal token": SignalShapedProjector(),
            "the class": OracleProjector,
            "needs arguments": projector_needs_arguments,
        },
        "diagnoses": {
            "collapsed": (MeanProjector(), "the same conditioning for every request"),
            "shape": (SignalShapedProjector(), "(B, L, D_cond)"),
            "class": (OracleProjector, "not its class"),
            "arguments": (projector_needs_arguments, "needs 2 arguments"),
        },
    },
    "ch09.guidance": {
        "correct": [guidance_reference, guidance_two_passes],
        "wrong": {
            "from the conditional": guidance_from_cond,
            "paper's convention": guidance_paper_convention,
            "swapped": guidance_swapped,
            "no guidance": guidance_none,
            "scaled conditional": guidance_scaled_cond,
            "uncond + w cond": guidance_uncond_plus,
            "output object": guidance_output_object,
            "doubled batch": guidance_doubled,
        },
        "diagnoses": {
            "paper": (guidance_paper_convention, "guidance paper's convention"),
            "from cond": (guidance_from_cond, "UNCONDITIONAL prediction"),
            "object": (guidance_output_object, ".sample"),
        },
    },
    "ch09.q1": {"answer": "b", "wrong": ["a", "c", "d"]},
    "ch09.q2": {"answer": "a", "wrong": ["b", "c", "d"]},
    "ch09.q3": {"answer": "c", "wrong": ["a", "b", "d"]},
}
