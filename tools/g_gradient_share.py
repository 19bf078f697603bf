"""How much of G's pixel gradient all generated samples share, as training goes (docs/reproduction.md).

    python tools/g_gradient_share.py        # GAN G3x400 D3x128, Adam lr 0.001, seed 0; ~1 min on 1 core

share = ||mean_i g_i|| / mean_i ||g_i|| over a batch of 64 generated images, g_i the gradient of
G's loss (non-saturating, through D) with respect to image i: 0 when no direction is common to the
samples, 1 when all get the same one. Measured on a fixed probe batch at steps 1, 100, 300 and 600
of the real training step (sweep/train/loop.py), D's batch norm on separate and on joint batches.
"""
import torch

from models.losses import gan_g_loss
from models.networks import discriminate
from sweep.plan.config import TrialConfig
from sweep.train.backends import backend_for
from sweep.train.data import load_mnist
from sweep.train.loop import start_stack, train_step

PROBE_STEPS = (1, 100, 300, 600)


def shares(d_batch: str, mnist) -> dict[int, float]:
    cfg = TrialConfig(family="gan", nLayerG=3, sizeG=400, nLayerD=3, sizeD=128, n_train=10000, d_batch=d_batch)
    run, = start_stack([cfg], mnist.train_images)
    pack = backend_for([run])
    probe_z = torch.rand(1, 64, cfg.z_dim, generator=torch.Generator().manual_seed(123)) * 2 - 1  # (1, 64, z)
    perm = torch.randperm(cfg.n_train, generator=run.gen)
    out = {}
    for step in range(1, max(PROBE_STEPS) + 1):
        x = run.data[perm[(step * 64) % 9984:(step * 64) % 9984 + 64]].unsqueeze(0)  # (1, 64, 1024)
        if step in PROBE_STEPS:
            fake = pack.g(probe_z).detach().requires_grad_(True)  # (1, 64, 1024)
            gan_g_loss(discriminate(pack.d, x, fake, d_batch)[1], None).sum().backward()
            g = fake.grad[0]  # (64, 1024)
            out[step] = float(g.mean(0).norm() / g.norm(dim=1).mean())
            for p in pack.d_parameters():
                p.grad = None
        train_step(pack, x)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    mnist = load_mnist()
    for d_batch in ("separate", "joint"):
        print(d_batch, {step: round(v, 3) for step, v in shares(d_batch, mnist).items()})
