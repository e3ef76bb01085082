from __future__ import annotations

import pytest

from tinytribe.features.extract import ExtractionConfig, FeatureExtractor


@pytest.fixture(scope="session")
def extractor() -> FeatureExtractor:
    """The offline default backbones, loaded once per test run."""
    return FeatureExtractor(ExtractionConfig(device="cpu"))
