"""CUDA smoke test of the student: the same outputs as on the CPU, a bf16 training step, a
checkpoint round trip from GPU to CPU. Run on a GPU machine: python benchmarks/cuda_smoke.py"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from tinytribe.formats import MODALITIES
from tinytribe.model import TimeGrid, create_model
from tinytribe.model.checkpoint import load_checkpoint, save_checkpoint


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for name in ("tiny-tribe-demo", "tiny-tribe-v3"):
        torch.manual_seed(0)
        cpu = create_model(name).eval()
        gpu = create_model(name).eval()
        gpu.load_state_dict(cpu.state_dict())
        gpu = gpu.cuda()
        g = torch.Generator().manual_seed(1)
        feats = {m: torch.randn(2, 166, d, generator=g) for m, d in zip(MODALITIES, cpu.config.input_dims)}
        avail = torch.tensor([[True, True, True], [True, True, False]])
        t0 = torch.zeros(2)
        grid = TimeGrid.regular(torch.full((2,), 8.0), 50, 1.49, batch=2)
        with torch.no_grad():
            a = cpu(feats, avail, t0, {"f": grid}, torch.tensor([0, -1])).responses["f"]
            b = gpu({m: x.cuda() for m, x in feats.items()}, avail.cuda(), t0.cuda(),
                    {"f": TimeGrid(grid.times.cuda(), grid.width_s)}, torch.tensor([0, -1]).cuda()).responses["f"]
        err = (a - b.cpu()).abs().max().item() / a.abs().max().item()
        print(f"{name}: CPU vs CUDA fp32 max relative difference {err:.2e}")
        assert err < 1e-3, err

        gpu.train()
        opt = torch.optim.AdamW(gpu.parameters(), lr=1e-4)
        target = torch.randn(2, 50, gpu.config.n_outputs, device="cuda")
        for _ in range(3):
            opt.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = gpu({m: x.cuda() for m, x in feats.items()}, avail.cuda(), t0.cuda(),
                          {"f": TimeGrid(grid.times.cuda(), grid.width_s)}, torch.tensor([0, 1]).cuda(),
                          p_modality_dropout=0.3, return_fused=True)
                loss = (out.responses["f"].float() - target).square().mean() + 0.01 * out.aux_loss
            loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in gpu.parameters() if p.grad is not None)
            opt.step()
        print(f"{name}: bf16 autocast training steps finite, loss {loss.item():.4f}")
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(gpu, Path(d) / "c.pt", phase="smoke", step=3)
            back, _ = load_checkpoint(Path(d) / "c.pt")
            assert next(back.parameters()).device.type == "cpu"
        print(f"{name}: checkpoint saved on CUDA reloads on the CPU")
    print("cuda smoke test passed")


if __name__ == "__main__":
    main()
