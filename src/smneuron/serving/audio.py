"""Audio bytes -> mono float32 samples at the model's rate: decode, mix down, resample, bound.

Decoding is libsndfile's (the ``soundfile`` wheel bundles it): WAV, FLAC, OGG/Vorbis, MP3.
The header is read first, so audio longer than the limit is refused (413) or only its first
seconds are decoded (``overflow="truncate"``) before the rest costs any work.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

from smneuron.errors import ClientError, PayloadTooLarge

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

FORMATS = ("WAV", "WAVEX", "RF64", "FLAC", "OGG", "MP3")


def decode_audio(
    data: bytes,
    sampling_rate: int,
    max_samples: int,
    *,
    overflow: str = "truncate",
    where: str = "audio",
) -> np.ndarray:
    """Mono float32 samples at ``sampling_rate``, at most ``max_samples`` of them.

    Longer audio is cut to ``max_samples`` (``overflow="truncate"``) or refused with a 413
    (``"reject"``). Undecodable data and audio without samples are 400s.
    """
    import numpy as np
    import soundfile

    if not data:
        raise ClientError(f"{where}: the body is empty; send the audio file's bytes")
    try:
        source = soundfile.SoundFile(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise ClientError(
            f"{where}: not decodable audio (supported: WAV, FLAC, OGG, MP3): {err}"
        ) from err
    with source:
        if source.format not in FORMATS:
            raise ClientError(f"{where}: audio format {source.format} is not supported")
        rate, frames = int(source.samplerate), int(source.frames)
        if rate < 1:
            raise ClientError(f"{where}: the audio header gives no sampling rate")
        if frames <= 0:
            raise ClientError(f"{where}: the audio holds no samples (zero length)")
        # Frames to read so that, once resampled, max_samples are there.
        needed = int(np.ceil(max_samples * rate / sampling_rate))
        if frames > needed and overflow == "reject":
            seconds = frames / rate
            limit = max_samples / sampling_rate
            raise PayloadTooLarge(
                f"{where}: {seconds:.2f} s of audio is longer than the largest compiled bucket "
                f"({limit:g} s); send shorter clips, or serve with SMNEURON_OVERFLOW=truncate"
            )
        try:
            samples = source.read(frames=min(frames, needed), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
            raise ClientError(f"{where}: corrupt audio data: {err}") from err
    if samples.shape[0] == 0:
        raise ClientError(f"{where}: the audio holds no samples (zero length)")
    mono = samples.mean(axis=1, dtype=np.float32)
    if not np.all(np.isfinite(mono)):
        raise ClientError(f"{where}: the audio holds NaN or infinite samples")
    if rate != sampling_rate:
        mono = resample(mono, rate, sampling_rate)
    return mono[:max_samples]


def resample(signal: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling by the FFT (the spectrum cut or zero-extended, as
    ``scipy.signal.resample`` does); ``signal`` is bounded by the largest bucket."""
    import numpy as np

    count = len(signal)
    target = max(1, round(count * target_rate / source_rate))
    if target == count:
        return signal.astype(np.float32)
    spectrum = np.fft.rfft(signal.astype(np.float64))
    bins = target // 2 + 1
    out = np.zeros(bins, dtype=np.complex128)
    keep = min(bins, len(spectrum))
    out[:keep] = spectrum[:keep]
    if target < count and target % 2 == 0:
        out[bins - 1] = out[bins - 1].real  # the new Nyquist bin of an even length is real
    return (np.fft.irfft(out, n=target) * (target / count)).astype(np.float32)
