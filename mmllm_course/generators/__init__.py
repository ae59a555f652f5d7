"""Part 5 of the map, modality generators: conditional diffusion decoders for images and 3-D points.

``latent_diffusion``: chapter 9's frozen image generator, a Stable Diffusion in miniature built
from ``diffusers`` parts (``AutoencoderKL``, ``UNet2DConditionModel``, ``DDPMScheduler`` /
``DDIMScheduler`` with classifier-free guidance); ``judge``: the CNN trained on real images that
scores what a generated image shows; ``pretrain``: the script that trains both and the loaders of
the shipped weights. ``diffusers`` is imported only when a model is built.
"""

from mmllm_course.generators.judge import JudgeConfig, ShapesJudge, caption_labels, judge_images
from mmllm_course.generators.latent_diffusion import (
    PREDICTION_TYPES,
    GeneratorConfig,
    LatentDiffusionGenerator,
    diffusion_loss,
    diffusion_target,
    make_sampler,
    make_train_scheduler,
)
from mmllm_course.generators.point_diffusion import (
    CHAPTER11_DECODER, POINT_DECODER_BARS, AttributeConditioner, AttributedClouds, PointDecoderConfig, PointDecoderRecipe,
    PointDecoderRun, PointDenoiser, PointDiffusionDecoder, PointJudge, add_noise_and_velocity, chamfer_distance, cloud_radius,
    ddim_step, evaluate_point_decoder, load_point_decoder, load_point_judge, make_attributed_clouds, make_point_schedulers,
    pairwise_chamfer, point_decoder_failures, point_sampling_seconds, random_conditioning, run_point_decoder, train_point_decoder,
)
from mmllm_course.generators.pretrain import evaluate_generator, load_chapter9_generator, load_judge, sampling_seconds_per_image

__all__ = [
    "PREDICTION_TYPES", "GeneratorConfig", "LatentDiffusionGenerator", "diffusion_loss", "diffusion_target", "make_sampler",
    "make_train_scheduler", "JudgeConfig", "ShapesJudge", "caption_labels", "judge_images", "evaluate_generator",
    "load_chapter9_generator", "load_judge", "sampling_seconds_per_image",
    "CHAPTER11_DECODER", "POINT_DECODER_BARS", "AttributeConditioner", "AttributedClouds", "PointDecoderConfig", "PointDecoderRecipe",
    "PointDecoderRun", "PointDenoiser", "PointDiffusionDecoder", "PointJudge", "add_noise_and_velocity", "chamfer_distance", "cloud_radius",
    "ddim_step", "evaluate_point_decoder", "load_point_decoder", "load_point_judge", "make_attributed_clouds", "make_point_schedulers",
    "pairwise_chamfer", "point_decoder_failures", "point_sampling_seconds", "random_conditioning", "run_point_decoder", "train_point_decoder",
]
