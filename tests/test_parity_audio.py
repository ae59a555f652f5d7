"""Parity of chapter 8's audio front end and encoders with transformers (tiny random models, offline)."""

import numpy as np
import pytest
import torch

from mmllm_course.encoders.audio import (
    AudioEncoder,
    LogMelConfig,
    LogMelSpectrogram,
    mel_filter_bank,
    hubert_feature_encoder_from_transformers,
    whisper_encoder_from_transformers,
    whisper_sinusoids,
)

transformers = pytest.importorskip("transformers")

WHISPER = dict(vocab_size=100, num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4,
               encoder_ffn_dim=64, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=64,
               max_source_positions=50, max_target_positions=32, pad_token_id=1, bos_token_id=1, eos_token_id=2,
               decoder_start_token_id=1)
HUBERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16, 16),
              conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


@pytest.fixture(scope="module")
def extractor():
    return transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=1)


@pytest.fixture(scope="module")
def whisper():
    torch.manual_seed(0)
    return transformers.WhisperModel(transformers.WhisperConfig(**WHISPER)).eval()


def _speech_like(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def test_mel_filter_bank_equals_extractor(extractor):
    ours = mel_filter_bank(201, 80, 16000, 0.0, 8000.0).numpy()
    assert ours.shape == extractor.mel_filters.shape == (201, 80)
    assert np.abs(ours - extractor.mel_filters).max() < 1e-12


@pytest.mark.parametrize("length", [400, 9000, 16000, 20000])  # shorter (zero-padded), exact, longer (cut)
def test_log_mel_equals_whisper_feature_extractor(extractor, length):
    wave = _speech_like(length, length)
    ref = extractor(wave, sampling_rate=16000, return_tensors="pt").input_features  # (1, 80, 100)
    ours = LogMelSpectrogram(LogMelConfig(chunk_length=1.0))(torch.from_numpy(wave), sample_rate=16000)
    assert ours.shape == ref.shape == (1, 80, 100)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_log_mel_batch_clamps_each_clip_on_its_own(extractor):
    waves = [_speech_like(16000, 1), 0.001 * _speech_like(16000, 2)]  # very different loudness
    ref = extractor(waves, sampling_rate=16000, return_tensors="pt").input_features
    ours = LogMelSpectrogram(LogMelConfig(chunk_length=1.0))(torch.from_numpy(np.stack(waves)))
    assert (ours - ref).abs().max().item() <= 1e-4


def test_whisper_sinusoids_equal_transformers(whisper):
    ref = whisper.encoder.embed_positions.weight
    assert (whisper_sinusoids(50, 32) - ref).abs().max().item() < 1e-5


def test_whisper_encoder_parity(extractor, whisper):
    mel = extractor([_speech_like(16000, 3), _speech_like(12000, 4)], sampling_rate=16000,
                    return_tensors="pt").input_features  # (2, 80, 100) = 2 * max_source_positions frames
    ours = whisper_encoder_from_transformers(whisper)
    assert isinstance(ours, AudioEncoder) and not ours.training
    with torch.no_grad():
        ref = whisper.encoder(mel).last_hidden_state
        out = ours(mel)
    assert out.shape == ref.shape == (2, 50, 32)
    assert (out - ref).abs().max().item() <= 1e-5
    # k_proj has no bias in Whisper: the converter loads zeros
    assert torch.count_nonzero(ours.blocks[0].attn.k_proj.bias) == 0
    # like WhisperEncoder, the converted encoder wants exactly 2 * max_source_positions frames
    with pytest.raises(ValueError, match="100"):
        ours(mel[..., :60])
    ours.config.exact_frames = False
    with torch.no_grad():
        assert ours(mel[..., :60]).shape == (2, 30, 32)


def test_whisper_encoder_from_folder_and_wrapped_model(tmp_path, whisper):
    whisper.save_pretrained(tmp_path)
    mel = torch.randn(1, 80, 100)
    from_folder = whisper_encoder_from_transformers(str(tmp_path))
    torch.manual_seed(1)
    gen = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**WHISPER)).eval()
    from_gen = whisper_encoder_from_transformers(gen)
    with torch.no_grad():
        assert (from_folder(mel) - whisper.encoder(mel).last_hidden_state).abs().max().item() <= 1e-5
        assert (from_gen(mel) - gen.model.encoder(mel).last_hidden_state).abs().max().item() <= 1e-5


def test_whisper_converter_refuses_other_models():
    hubert = transformers.HubertModel(transformers.HubertConfig(**HUBERT))
    with pytest.raises(ValueError, match="whisper"):
        whisper_encoder_from_transformers(hubert)
    with pytest.raises(TypeError):
        whisper_encoder_from_transformers(42)


@pytest.mark.parametrize("norm, bias", [("group", False), ("layer", True)])
def test_hubert_feature_encoder_parity(norm, bias):
    torch.manual_seed(0)
    hf = transformers.HubertModel(transformers.HubertConfig(**HUBERT, feat_extract_norm=norm, conv_bias=bias)).eval()
    ours = hubert_feature_encoder_from_transformers(hf)
    wave = torch.randn(2, 4000)
    with torch.no_grad():
        feats = hf.feature_extractor(wave)  # (B, C, N)
        proj = hf.feature_projection(feats.transpose(1, 2))  # (B, N, D)
        assert ours.features(wave).shape == feats.shape == (2, 16, ours.config.num_frames(4000))
        assert (ours.features(wave) - feats).abs().max().item() <= 1e-5
        assert (ours(wave) - proj).abs().max().item() <= 1e-5


def test_hubert_converter_refuses_whisper(whisper):
    with pytest.raises(ValueError, match="hubert"):
        hubert_feature_encoder_from_transformers(whisper)
