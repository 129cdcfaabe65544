"""Deterministic data order and augmentation, so that a resumed (or distributed) run sees
exactly the samples and augmentations an uninterrupted one does."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler


def _fit_seed(key: int) -> int:
    """``key`` as a seed torch's generators take: unchanged in their range (-2**63 to
    2**64 - 1), else folded into it, so that large ``--seed`` values work too."""
    return key if -2**63 <= key < 2**64 else key % 2**64


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the augmentation of sample ``index`` in ``epoch`` of a run seeded ``seed``."""
    return _fit_seed((seed * 1_000_003 + epoch) * 10_000_019 + index)


class EpochSampler(Sampler):
    """A permutation fixed by (seed, epoch), optionally sharded over ``world`` ranks and
    starting ``start`` indices in (to resume mid-epoch). It yields (epoch, index) pairs, which
    :class:`SeededView` takes, so that loader workers kept alive across epochs
    (``persistent_workers``) still augment each sample for the epoch it is drawn in."""

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.size, self.seed, self.shuffle, self.rank, self.world = size, seed, shuffle, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator().manual_seed(_fit_seed(self.seed * 1_000_003 + self.epoch))
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self):
        mine = self._order()[self.rank::self.world][self.start:]
        return iter([(self.epoch, i) for i in mine])

    def __len__(self) -> int:
        return max(len(range(self.rank, self.size, self.world)) - self.start, 0)


class SeededView(Dataset):
    """Applies ``transform`` to ``dataset[i]`` under an RNG seeded by (seed, epoch, i): the
    augmentation of a sample depends on nothing else, and the global RNG is left untouched.
    The key is ``i`` (the epoch is then the ``epoch`` attribute) or an (epoch, i) pair."""

    def __init__(self, dataset, transform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        item = self.dataset[i]
        if item is None:
            return None
        image, label = item
        # torchvision's random transforms draw from the global CPU generator: seed it for this
        # sample and put its state back afterwards (the CPU draws of fork_rng + manual_seed).
        # torch.manual_seed is avoided: it also seeds every accelerator type, formatting a
        # stack trace per type while they are uninitialised (about 1 ms a sample), and would
        # reseed an initialised GPU generator that fork_rng(devices=[]) does not restore.
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(sample_seed(self.seed, epoch, i))
        try:
            return self.transform(image), label
        finally:
            torch.set_rng_state(state)
