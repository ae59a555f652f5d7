"""Whole pipelines built from the five parts of the map; chapter 11's capstone, audio in and a 3-D object out.

``audio_to_3d``: :class:`AudioTo3D` (waveform -> audio encoder -> bridge -> LM emitting ``[3D0] [3D1]`` ->
output projector -> frozen point diffusion decoder -> point cloud), its data, its two trainings
(``train_capstone``; the steps one by one: ``audio_to_3d.pretrain_audio_encoder``, ``build_audio_to_3d``,
``audio_to_3d.train_audio_to_3d``), its evaluation beside the two baselines, and ``describe()``, the flow
as :class:`~mmllm_course.viz.FlowStage` s.
"""

from mmllm_course.pipelines.audio_to_3d import (
    CAPSTONE_BARS,
    CHAPTER11,
    AudioTo3D,
    AudioTo3DRecipe,
    AudioTo3DResult,
    NoObjectError,
    SpokenRequests,
    build_audio_to_3d,
    capstone_failures,
    evaluate_audio_to_3d,
    make_capstone_data,
    make_spoken_requests,
    run_capstone,
    train_capstone,
)

__all__ = [
    "CAPSTONE_BARS", "CHAPTER11", "AudioTo3D", "AudioTo3DRecipe", "AudioTo3DResult", "NoObjectError", "SpokenRequests",
    "build_audio_to_3d", "capstone_failures", "evaluate_audio_to_3d", "make_capstone_data", "make_spoken_requests",
    "run_capstone", "train_capstone",
]
