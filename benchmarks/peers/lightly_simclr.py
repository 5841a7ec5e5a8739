"""lightly's SimCLR loop on the shared Omniglot protocol, for a side-by-side run.

Run in a separate venv holding lightly and sketchshot (never a project dependency):
  /tmp/peers/bin/python benchmarks/peers/lightly_simclr.py --minutes 15
Prints one JSON line: images/s and 1-shot accuracy of the conv4 backbone features.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torchvision.transforms as T
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.transforms.multi_view_transform import MultiViewTransform
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from omniglot import held_out, one_shot_accuracy, train_config  # noqa: E402

from sketchshot.data import load_dataset  # noqa: E402
from sketchshot.encoders import create_encoder  # noqa: E402
from sketchshot.methods import create_method  # noqa: E402


class Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, transform) -> None:
        self.pil = [Image.fromarray(a[0].numpy()) for a in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int):
        return self.transform(self.pil[i])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-eval", action="store_true", help="images/s only (speed rounds)")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.5)
    args = parser.parse_args()
    torch.manual_seed(0)
    train = load_dataset(train_config(), 28, "train")
    view = T.Compose([
        T.RandomResizedCrop(28, scale=(0.6, 1.0), antialias=True),
        T.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        T.ToTensor(),
    ])  # fmt: skip
    data = Images(train.images, MultiViewTransform([view, view]))
    loader = torch.utils.data.DataLoader(
        data, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=1,
        persistent_workers=True,
    )  # fmt: skip
    # the same conv4 as sketchshot's; lightly's projection head and loss
    backbone = create_encoder("conv4")
    head = SimCLRProjectionHead(backbone.embedding_dim, 512, 128)
    criterion = NTXentLoss(temperature=args.temperature)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.minutes * 60:
        for x0, x1 in loader:
            z0, z1 = head(backbone(x0)), head(backbone(x1))
            loss = criterion(z0, z1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            images += x0.shape[0]
            if time.perf_counter() - start >= args.minutes * 60:
                break
    seconds = time.perf_counter() - start
    probe = create_method("simclr", backbone).eval()  # cosine prototypes on backbone features
    acc = {} if args.no_eval else one_shot_accuracy(probe, held_out())
    print(
        json.dumps(
            {
                "name": f"lightly SimCLR batch_size={args.batch_size}",
                "seconds": seconds,
                "images_per_s": images / seconds,
                "loss": loss.item(),
                **acc,
            }
        )
    )


if __name__ == "__main__":
    main()
