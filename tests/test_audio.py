import numpy as np
import pytest
import soundfile as sf
from builders import BAD_CORPUS_MAX_DURATION_S, make_bad_corpus, tone, write_wav

from qa.errors import AudioError
from qa.ingest import audio


@pytest.mark.parametrize(
    "subtype, fmt",
    [("PCM_16", "WAV"), ("PCM_24", "WAV"), ("PCM_32", "WAV"), ("FLOAT", "WAV"), ("ULAW", "WAV"), ("ALAW", "WAV"),
     ("PCM_16", "FLAC"), ("VORBIS", "OGG"), ("MPEG_LAYER_III", "MP3")],
)
def test_decodes_every_supported_encoding_to_16k(tmp_path, subtype, fmt):
    ext = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}[fmt]
    path = tmp_path / f"x{ext}"
    sf.write(str(path), tone(2.0, rate=8000, channels=2), 8000, format=fmt, subtype=subtype)
    decoded = audio.decode_file(path)
    assert decoded.sample_rate == 16000
    assert len(decoded.channels) == 2
    assert all(ch.dtype == np.float32 for ch in decoded.channels)
    assert decoded.duration_s == pytest.approx(2.0, abs=0.1)  # MP3 adds encoder padding
    # the 440 Hz tone survives resampling at about its original level
    rms = float(np.sqrt(np.mean(decoded.channels[0][4000:-4000] ** 2)))
    assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.15)
    assert decoded.info.container == fmt


def test_sixteen_khz_passes_through_unchanged(tmp_path):
    samples = tone(1.0, rate=16000)
    decoded = audio.decode_file(write_wav(tmp_path / "a.wav", samples, rate=16000, subtype="FLOAT"))
    np.testing.assert_array_equal(decoded.channels[0], samples)


def test_channel_roles():
    assert audio.channel_roles("stereo-agent-left", 2) == ["agent", "customer"]
    assert audio.channel_roles("stereo-agent-right", 2) == ["customer", "agent"]
    assert audio.channel_roles("stereo-agent-left", 1) == [None]
    with pytest.raises(ValueError):
        audio.channel_roles("quad", 2)


def test_each_bad_file_is_rejected_with_its_reason(tmp_path):
    expected = make_bad_corpus(tmp_path)
    for name, code in expected.items():
        with pytest.raises(AudioError) as info:
            audio.decode_file(tmp_path / name, max_duration_s=BAD_CORPUS_MAX_DURATION_S)
        assert info.value.code == code, f"{name}: {info.value}"
        assert name in str(info.value), "the message must name the file"


def test_unknown_extension(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(1.0))
    renamed = path.rename(tmp_path / "a.aiff")
    with pytest.raises(AudioError, match="extension .aiff") as info:
        audio.decode_file(renamed)
    assert info.value.code == "audio.wrong_extension"
