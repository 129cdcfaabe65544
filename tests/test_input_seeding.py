"""Per-sample augmentation seeding: a sample's augmentation depends only on (seed, epoch, index),
whichever dataset instance or loader worker makes it, and leaves the global RNG alone."""

import torch
from PIL import Image
from torch.utils.data import DataLoader

from mobilenets.data import SAMPLE_DIR, ImageFolderDataset, collate_skip_bad, train_transform
from mobilenets.training.sampling import EpochSampler, SeededView

PRE = {"resolution": 32, "resize": 37, "crop_pct": 0.875, "interpolation": "bilinear",
       "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def augment():
    """Every random draw kind of train_transform: crop, flip, jitter, RandAugment, erasing."""
    return train_transform(32, PRE, auto_augment="randaugment", color_jitter=0.4,
                           random_erasing=0.5)


class SameImage:
    """``n`` items that are all one image: any difference between them is augmentation."""

    def __init__(self, n: int):
        g = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 256, (48, 48, 3), generator=g, dtype=torch.uint8)
        self.image, self.n = Image.fromarray(pixels.numpy()), n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.image, 0


def test_same_key_same_tensor_across_instances_and_keys_differ():
    a, b = SeededView(SameImage(8), augment(), seed=3), SeededView(SameImage(8), augment(), 3)
    for key in [(0, 0), (0, 5), (2, 5)]:
        assert torch.equal(a[key][0], b[key][0])
    b.epoch = 2                            # plain indexing takes the epoch attribute
    assert torch.equal(a[(2, 5)][0], b[5][0])
    by_index = [a[(0, i)][0] for i in range(8)]
    assert all(not torch.equal(by_index[i], by_index[j])
               for i in range(8) for j in range(i + 1, 8))
    assert not torch.equal(a[(0, 5)][0], a[(1, 5)][0])          # another epoch
    other_seed = SeededView(SameImage(8), augment(), seed=4)
    assert not torch.equal(a[(0, 5)][0], other_seed[(0, 5)][0])


def test_global_rng_is_left_as_it_was():
    view = SeededView(SameImage(4), augment(), seed=1)
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    view[(0, 1)], view[(3, 2)]
    assert torch.equal(torch.rand(5), expected)


def test_large_seeds_work_and_stay_deterministic():
    """Keys past the 64-bit seed range (seed >= about 1.8 million) are folded into it."""
    for seed in (2_000_000, 2**40, -(2**40)):
        a, b = SeededView(SameImage(4), augment(), seed), SeededView(SameImage(4), augment(), seed)
        assert torch.equal(a[(7, 3)][0], b[(7, 3)][0])
        assert not torch.equal(a[(7, 3)][0], a[(7, 2)][0])
    sampler = EpochSampler(10, seed=2**60)
    sampler.set_epoch(4)
    assert sorted(i for _, i in sampler) == list(range(10))


def _epoch_batches(workers: int, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    raw = ImageFolderDataset(SAMPLE_DIR / "train")
    view = SeededView(raw, augment(), seed=11)
    sampler = EpochSampler(40, seed=11)
    sampler.set_epoch(epoch)
    loader = DataLoader(view, batch_size=8, sampler=sampler, num_workers=workers,
                        collate_fn=collate_skip_bad)
    return [(images, labels) for images, labels, _ in loader]


def test_loader_workers_0_and_2_give_the_same_batches():
    """A real DataLoader: 2 worker processes (each sample made in either one) produce exactly
    what the main process does, for the same sampler epoch."""
    in_process, two_workers = _epoch_batches(0, epoch=3), _epoch_batches(2, epoch=3)
    assert len(in_process) == len(two_workers) == 5
    for (x0, y0), (x2, y2) in zip(in_process, two_workers):
        assert x0.shape == (8, 3, 32, 32)
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    next_epoch = _epoch_batches(0, epoch=4)
    assert not torch.equal(in_process[0][0], next_epoch[0][0])
