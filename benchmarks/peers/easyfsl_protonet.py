"""easyfsl's PrototypicalNetworks + TaskSampler on the shared Omniglot protocol, for a
side-by-side run (60-way 1-shot 5-query episodes, Adam 1e-3, data in memory, conv4).

Run in a separate venv holding easyfsl and sketchshot (never a project dependency):
  /tmp/peers/bin/python benchmarks/peers/easyfsl_protonet.py --minutes 20
Prints one JSON line: images/s and 1-shot accuracy scored like sketchshot's rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from easyfsl.methods import PrototypicalNetworks
from easyfsl.samplers import TaskSampler
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from omniglot import held_out, one_shot_accuracy, train_config  # noqa: E402

from sketchshot.data import load_dataset  # noqa: E402
from sketchshot.encoders import create_encoder  # noqa: E402
from sketchshot.methods import create_method  # noqa: E402


class InMemory(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images.float() / 255.0, labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]

    def get_labels(self) -> list[int]:
        return self.labels


class Sampler(TaskSampler):
    """easyfsl 1.5.0's __init__ calls Sampler.__init__(data_source=None), which torch 2.14
    rejects; this shim sets the same fields without that call."""

    def __init__(self, dataset, n_way, n_shot, n_query, n_tasks):  # noqa: D107
        self.n_way, self.n_shot, self.n_query, self.n_tasks = n_way, n_shot, n_query, n_tasks
        self.items_per_label = {}
        for item, label in enumerate(dataset.get_labels()):
            self.items_per_label.setdefault(label, []).append(item)
        self._check_dataset_size_fits_sampler_parameters()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-eval", action="store_true", help="images/s only (speed rounds)")
    parser.add_argument("--minutes", type=float, default=20.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    train = load_dataset(train_config(), 28, "train")
    data = InMemory(train.images, train.labels)
    sampler = Sampler(data, n_way=60, n_shot=1, n_query=5, n_tasks=100)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=sampler.episodic_collate_fn)
    backbone = create_encoder("conv4")
    model = PrototypicalNetworks(backbone)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.minutes * 60:
        for support, support_labels, query, query_labels, _ in loader:
            model.train()
            model.process_support_set(support, support_labels)
            loss = criterion(model(query), query_labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            images += support.shape[0] + query.shape[0]
            if time.perf_counter() - start >= args.minutes * 60:
                break
    seconds = time.perf_counter() - start
    probe = create_method("protonet", backbone).eval()  # scored like every other row
    acc = {} if args.no_eval else one_shot_accuracy(probe, held_out())
    print(
        json.dumps(
            {
                "name": "easyfsl PrototypicalNetworks",
                "seconds": seconds,
                "images_per_s": images / seconds,
                **acc,
            }
        )
    )


if __name__ == "__main__":
    main()
