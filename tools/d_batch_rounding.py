"""On a D without batch norm, how far joint and separate batches drift apart (docs/reproduction.md).

    python tools/d_batch_rounding.py        # GAN G3x400 D2x128, Adam lr 0.001, seed 0; ~30 s on 1 core

nLayerD 2 has no batch norm, so `d_batch` joint and separate compute the same function; they
differ only in how the matmuls round (one pass over 128 rows against two over 64). This trains
both for 1, 10, 50 and 100 steps of the real training step (sweep/train/loop.py) and prints the
largest difference between their G weights: rounding at step 1, amplified by the GAN game after.
"""
import torch

from sweep.plan.config import TrialConfig
from sweep.train.backends import backend_for
from sweep.train.data import load_mnist
from sweep.train.loop import start_stack, train_epoch

STEPS = (1, 10, 50, 100)


def g_weights(d_batch: str, steps: int, mnist) -> torch.Tensor:
    """G's weights, flattened, after `steps` steps (one epoch of steps x 64 images)."""
    cfg = TrialConfig(family="gan", nLayerG=3, sizeG=400, nLayerD=2, sizeD=128, dropoutD=False,
                      optimD="adam", optimG="adam", lr=0.001, n_train=64 * steps, epochs=1, d_batch=d_batch)
    run, = start_stack([cfg], mnist.train_images)
    pack = backend_for([run])
    train_epoch(pack)
    pack.write_back()  # the stacked back-end trains copies; the PointRun's nets get them back here
    return torch.cat([p.detach().flatten() for p in run.g.parameters()])


if __name__ == "__main__":
    torch.set_num_threads(1)
    mnist = load_mnist()
    for steps in STEPS:
        diff = (g_weights("joint", steps, mnist) - g_weights("separate", steps, mnist)).abs().max()
        print(f"{steps:4d} steps: largest |G weight, joint - separate| = {diff.item():.2g}")
