"""A class judge: a small CNN trained on labelled real data, to tell which classes samples belong to.

Used for class/mode coverage (which of the data's classes a generator draws,
and how often) and for class accuracy of conditional generators.  It is
trained on a fixed 80% of the data with random shifts of up to 2 pixels and
reports its accuracy on the other 20%, so a judgement comes with the judge's
own reliability.  Trained judges are cached per data fingerprint.
"""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from ..fileio import atomic_write
from ..pixels import from_uint8

__all__ = ["Judge", "load_or_train_judge", "train_judge"]


class Judge(nn.Module):
    """3 conv stages (conv-BN-ReLU-maxpool) + global pooling + linear: (B, C, H, W) in [-1, 1] -> (B, K) logits."""

    def __init__(self, channels: int, classes: int):
        super().__init__()

        def stage(a: int, b: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(stage(channels, 32), stage(32, 64), stage(64, 128), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.head = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """uint8 or [-1, 1] float (N, C, H, W) -> (N,) predicted classes."""
        x = from_uint8(images) if images.dtype == torch.uint8 else images.float()
        return torch.cat([self(b).argmax(1) for b in x.split(batch)])


def train_judge(images: torch.Tensor, labels: torch.Tensor, epochs: int = 30, seed: int = 0) -> tuple[Judge, float]:
    """Train on a fixed 80% split of images (N, C, H, W) in [-1, 1]; return (judge, accuracy on the other 20%)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(images), generator=g)
    cut = int(0.8 * len(images))
    tr, te = perm[:cut], perm[cut:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)                     # initial weights
        net = Judge(images.shape[1], int(labels.max()) + 1)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(epochs):
        net.train()
        order = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            shift = torch.randint(-2, 3, (2,), generator=g).tolist()
            loss = F.cross_entropy(net(torch.roll(images[idx], shifts=shift, dims=(2, 3))), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(images[te]).argmax(1) == labels[te]).float().mean().item()
    return net, acc


def load_or_train_judge(ds, cache_dir=None) -> tuple[Judge, float]:
    """The judge of a labelled ImageDataset, from the cache (keyed by its fingerprint) or trained now."""
    from ..data import cache_root
    if ds.labels is None:
        raise ValueError(f"{ds.source} has no class labels to train a judge on")
    folder = (cache_root() if cache_dir is None else cache_dir) / "judges"
    path, meta = folder / f"{ds.fingerprint}.safetensors", folder / f"{ds.fingerprint}.json"
    classes = int(np.asarray(ds.labels).max()) + 1                  # as train_judge counts them
    if path.is_file() and meta.is_file():
        net = Judge(ds.images.shape[1], classes)
        net.load_state_dict(load_file(str(path)))
        return net.eval(), float(json.loads(meta.read_text())["accuracy"])
    images = from_uint8(torch.from_numpy(np.array(ds.images)))
    net, acc = train_judge(images, torch.from_numpy(np.asarray(ds.labels)))
    atomic_write(path, save(net.state_dict()))
    atomic_write(meta, (json.dumps({"accuracy": acc, "source": ds.source}) + "\n").encode())
    return net, acc
