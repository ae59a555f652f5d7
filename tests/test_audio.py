"""Chapter 8 audio: log-mel and encoders (shapes, bad input) and the synthetic spoken descriptions."""

import numpy as np
import pytest
import torch

from mmllm_course.data.audio import (
    SPOKEN_WORDS,
    SpokenConfig,
    SpokenDescriptions,
    make_spoken_descriptions,
    synthesize_word,
)
from mmllm_course.data.shapes import COLORS, SHAPES, SIZES
from mmllm_course.encoders.audio import (
    AudioEncoder,
    AudioEncoderConfig,
    LogMelConfig,
    LogMelSpectrogram,
    WaveformEncoderConfig,
    WaveformFeatureEncoder,
    hertz_to_mel,
    log_mel_spectrogram,
    mel_filter_bank,
    mel_to_hertz,
)

ONE_SECOND = LogMelConfig(chunk_length=1.0)


def test_mel_scale_round_trip_and_shape_of_filters():
    hz = torch.tensor([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hertz(hertz_to_mel(hz)), hz)
    assert hertz_to_mel(torch.tensor(1000.0)).item() == pytest.approx(15.0)
    filters = mel_filter_bank(201, 40)
    assert filters.shape == (201, 40) and (filters >= 0).all()
    peaks = filters.argmax(dim=0)
    assert (peaks.diff() >= 0).all()  # centres rise with the filter index
    assert (peaks[1:10].diff() <= peaks[-10:].diff().min()).all()  # low filters narrower than high ones (mel scale)


def test_log_mel_shape_range_and_functional_form():
    wave = torch.randn(3, 12000) * 0.1
    mel = LogMelSpectrogram(ONE_SECOND)(wave)
    assert mel.shape == (3, 80, 100)
    assert (mel.amax(dim=(1, 2)) - mel.amin(dim=(1, 2)) <= 2.0 + 1e-6).all()  # 80 dB range -> 2 after / 4
    assert torch.equal(log_mel_spectrogram(wave, chunk_length=1.0), mel)
    unpadded = LogMelSpectrogram(LogMelConfig(chunk_length=None))(wave)
    assert unpadded.shape == (3, 80, 12000 // 160)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.randn(2, 2, 8000), "2 channels"),  # stereo, channels first
        (torch.randn(8000, 2), "stereo"),  # stereo, channels last
        (torch.zeros(0), "empty"),
        (torch.randn(1, 100), "too short.*T=100.*400"),
        (torch.full((1, 4000), float("nan")), "NaN"),
        (torch.randn(2, 3, 4, 5), "mono"),
    ],
)
def test_log_mel_rejects_bad_audio(bad, match):
    with pytest.raises(ValueError, match=match):
        LogMelSpectrogram(ONE_SECOND)(bad)


def test_log_mel_rejects_wrong_sample_rate_and_types():
    with pytest.raises(ValueError, match="16000.*44100"):
        LogMelSpectrogram(ONE_SECOND)(torch.randn(8000), sample_rate=44100)
    with pytest.raises(TypeError):
        LogMelSpectrogram(ONE_SECOND)(np.zeros(8000, dtype=np.float32))
    with pytest.raises(TypeError):
        LogMelSpectrogram(ONE_SECOND)(torch.zeros(8000, dtype=torch.long))
    with pytest.raises(ValueError):
        LogMelConfig(n_mels=0)


def test_audio_encoder_shapes_and_bad_mel():
    enc = AudioEncoder(AudioEncoderConfig(dim=32, depth=1, num_heads=4, mlp_dim=64, max_positions=50)).eval()
    mel = LogMelSpectrogram(ONE_SECOND)(torch.randn(2, 16000))
    assert enc(mel).shape == (2, 50, 32) and enc.pooled(mel).shape == (2, 32)
    assert enc(mel[..., :37]).shape == (2, 19, 32)  # ceil(37 / 2) tokens
    with pytest.raises(ValueError, match="frames.*102"):
        enc(torch.randn(1, 80, 102))
    with pytest.raises(ValueError, match="n_mels=80"):
        enc(torch.randn(1, 64, 100))
    with pytest.raises(ValueError, match="NaN"):
        enc(torch.full((1, 80, 10), float("nan")))
    with pytest.raises(ValueError, match="divisible"):
        AudioEncoderConfig(dim=30, num_heads=4)


def test_waveform_encoder_frames_and_bad_input():
    cfg = WaveformEncoderConfig()
    enc = WaveformFeatureEncoder(cfg).eval()
    assert cfg.min_samples == 40 and cfg.num_frames(40) == 1 and cfg.num_frames(39) == 0
    out = enc(torch.randn(2, 1600))
    assert out.shape == (2, cfg.num_frames(1600), 32)
    assert WaveformFeatureEncoder(WaveformEncoderConfig(hidden_size=None))(torch.randn(1, 1600)).shape[-1] == 16
    with pytest.raises(ValueError, match="T=39.*40"):
        enc(torch.randn(1, 39))
    with pytest.raises(ValueError, match="8000"):
        enc(torch.randn(1, 1600), sample_rate=8000)
    with pytest.raises(ValueError, match="channels"):
        enc(torch.randn(1, 2, 1600))
    with pytest.raises(ValueError, match="one entry per layer"):
        WaveformEncoderConfig(conv_dim=(8, 8), conv_kernel=(4,), conv_stride=(2,))


def test_spoken_descriptions_are_deterministic_and_labelled():
    a = make_spoken_descriptions(12, seed=3)
    b = make_spoken_descriptions(12, seed=3)
    c = make_spoken_descriptions(12, seed=4)
    assert torch.equal(a.waveforms, b.waveforms) and not torch.equal(a.waveforms, c.waveforms)
    assert a.waveforms.shape == (12, 16000) and a.waveforms.dtype == torch.float32
    assert bool(torch.isfinite(a.waveforms).all())
    for (shape, color, size), caption in zip(a.labels.tolist(), a.captions):
        assert caption == f"{SIZES[size]} {COLORS[color]} {SHAPES[shape]}"
    assert ((a.snr_db >= 0) & (a.snr_db <= 20)).all()
    ds = SpokenDescriptions(4, seed=0)
    wave, lab = ds[1]
    assert wave.shape == (16000,) and lab.shape == (3,)
    with pytest.raises(IndexError):
        ds[4]


def test_spoken_words_vary_between_speakers_but_stay_one_word():
    assert set(SPOKEN_WORDS) == set(SIZES + COLORS + SHAPES)
    low = synthesize_word("red", f0=100.0, seed=0)
    high = synthesize_word("red", f0=220.0, seed=0)
    assert abs(len(low) - 0.26 * 16000) < 40 and not np.allclose(low, high)
    # a word is closer to itself said by another voice than to another word (by mean log-mel): the words are
    # separable in principle, while words that share sounds (square / star) are closer than unrelated ones
    spec = LogMelSpectrogram(LogMelConfig(chunk_length=None))

    def profile(word, f0, seed):
        return spec(torch.from_numpy(synthesize_word(word, f0=f0, seed=seed)).float()).mean(dim=-1)[0]

    red_a, red_b, blue = profile("red", 120.0, 0), profile("red", 130.0, 1), profile("blue", 120.0, 0)
    assert (red_a - red_b).norm() < (red_a - blue).norm()
    square, star, yellow = profile("square", 150.0, 0), profile("star", 150.0, 0), profile("yellow", 150.0, 0)
    assert (square - star).norm() < (square - yellow).norm()


def test_spoken_config_rejects_bad_values():
    with pytest.raises(ValueError, match="too short"):
        SpokenConfig(clip_seconds=0.5)
    with pytest.raises(ValueError, match="unknown"):
        SpokenConfig(colors=("purple",))
    with pytest.raises(ValueError, match="low <= high"):
        SpokenConfig(snr_db_range=(10.0, 0.0))
    with pytest.raises(ValueError):
        synthesize_word("purple")
    with pytest.raises(TypeError):
        make_spoken_descriptions(2, config={"clip_seconds": 1.0})


def test_front_end_helpers_reject_bad_values():
    with pytest.raises(ValueError, match="num_mel_filters=200 is too many"):
        mel_filter_bank(65, 200)
    with pytest.raises(ValueError, match="max_frequency"):
        LogMelConfig(max_frequency=9000.0)  # above Nyquist at 16 kHz
    with pytest.raises(TypeError):
        hertz_to_mel(np.array([100.0]))
    with pytest.raises(ValueError, match="finite"):
        hertz_to_mel(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match=">= 0"):
        mel_to_hertz(-3.0)
    with pytest.raises(TypeError, match="exact_frames"):
        AudioEncoderConfig(exact_frames="yes")
    with pytest.raises(ValueError, match="activation"):
        AudioEncoderConfig(activation="relu6")
    with pytest.raises(ValueError, match="empty batch"):
        AudioEncoder()(torch.zeros(0, 80, 100))
