"""MobileViT-S (the design's video backbone): 640-d pooled features per frame, via transformers.

Its weights are not on PyPI: pass a local folder (a ``save_pretrained`` copy, e.g. of
``apple/mobilevit-small``), or a hub id on a platform with internet. ``random_init=True`` builds the
same architecture untrained (tests).
"""

from __future__ import annotations

import numpy as np
import torch


class MobileViTS:
    name, modality, dim = "mobilevit-s", "video", 640
    # apple/mobilevit-small's processor: short side 288, centre crop 256, pixels in [0, 1], BGR order
    resize, crop, mean, std, bgr = 288, 256, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), True

    def __init__(self, model: str | None = "apple/mobilevit-small", random_init: bool = False, device: str = "cpu"):
        from transformers import MobileViTConfig, MobileViTModel

        if random_init:
            torch.manual_seed(0)
            self.net = MobileViTModel(MobileViTConfig())  # the defaults are MobileViT-S
            self.revision = "random-init"
        else:
            try:
                self.net = MobileViTModel.from_pretrained(model)
            except OSError as e:
                raise OSError(f"MobileViT-S weights not found at {model!r} (no local copy and no hub access); "
                              f"use the offline default video backbone 'efficientnet-lite0'") from e
            self.revision = str(model)
        self.net = self.net.eval().to(device)
        self.device = device

    @torch.inference_mode()
    def encode(self, frames: np.ndarray) -> np.ndarray:
        """(N, 256, 256, 3) uint8 RGB -> (N, 640)."""
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if self.bgr:
            x = x.flip(1)
        return self.net(pixel_values=x).pooler_output.float().cpu().numpy()
