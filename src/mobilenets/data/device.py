"""Image data decoded once and kept in device memory, augmented a whole batch at a time there.

On a GPU the usual pipeline (PIL decode, crop and flip in loader processes) feeds a small
network at 128 px more slowly than the GPU trains it. With ``--device-data`` the images are
decoded once (by the loader workers), stored as uint8 on the device, and each training batch
is cropped, flipped, normalised and erased there in a few batched kernels:

* training images are resized to fit a ``short x long`` canvas (aspect kept; the rest of the
  canvas is padding that is never sampled), and RandomResizedCrop draws its boxes inside each
  image's own area with torchvision's rule (``scale`` of the area, log-uniform aspect in
  ``ratio``, ten tries, then the centre crop);
* the crop and the flip are one affine map per image, sampled bilinearly
  (``torch.nn.functional.grid_sample``: no antialiasing, which matters little for crops that
  are at most a little larger than the output);
* validation images get the eval transform (resize, centre crop) once at decode time, so
  their pixels are exactly those of the usual pipeline.

Every random draw of a batch comes from a generator seeded by (seed, epoch, step, rank), so a
resumed run sees the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF


class _Stored(Dataset):
    """Items of ``dataset`` (PIL image, label) as (uint8 CHW canvas, height, width, label)."""

    def __init__(self, dataset, canvas: tuple[int, int], interpolation: str,
                 transform=None):
        self.dataset, self.canvas, self.transform = dataset, canvas, transform
        self.interpolation = InterpolationMode(interpolation)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if item is None:                     # unreadable: the dataset has warned
            return None
        image, label = item
        x = TF.pil_to_tensor(image) if self.transform is None else self.transform(image)
        ch, cw = self.canvas
        h, w = x.shape[-2:]
        if self.transform is None:           # fit inside the canvas, aspect kept
            s = min(ch / h, cw / w)
            h, w = max(1, min(ch, round(h * s))), max(1, min(cw, round(w * s)))
            x = TF.resize(x, [h, w], interpolation=self.interpolation, antialias=True)
        out = torch.zeros(3, ch, cw, dtype=torch.uint8)
        out[:, :h, :w] = x
        return out, h, w, label


def _collate(items):
    good = [t for t in items if t is not None]
    if not good:
        return None, len(items)
    x = torch.stack([t[0] for t in good])
    hw = torch.tensor([[t[1], t[2]] for t in good], dtype=torch.int64)
    y = torch.tensor([t[3] for t in good], dtype=torch.int64)
    return (x, hw, y), len(items) - len(good)


class DeviceImages:
    """A labelled image set decoded into one uint8 tensor ``images`` (N x 3 x H x W) on
    ``device``, with each image's own ``sizes`` (N x 2: height, width; the rest is padding)
    and ``labels``; ``unreadable`` counts the images that could not be read (skipped)."""

    def __init__(self, dataset, canvas: tuple[int, int], device, interpolation: str = "bilinear",
                 transform=None, workers: int = 0, batch_size: int = 256):
        """``dataset``: items (PIL image, label) or None for an unreadable image.
        ``transform``: PIL -> uint8 tensor of exactly ``canvas`` (e.g. resize and centre
        crop); without one, images are resized to fit inside ``canvas``."""
        stored = _Stored(dataset, canvas, interpolation, transform)
        loader = DataLoader(stored, batch_size, num_workers=workers, collate_fn=_collate)
        n = len(dataset)
        self.images = torch.empty(n, 3, *canvas, dtype=torch.uint8)
        self.sizes = torch.empty(n, 2, dtype=torch.int64)
        self.labels = torch.empty(n, dtype=torch.int64)
        count, self.unreadable = 0, 0
        for batch, bad in loader:
            self.unreadable += bad
            if batch is None:
                continue
            x, hw, y = batch
            self.images[count:count + len(y)] = x
            self.sizes[count:count + len(y)] = hw
            self.labels[count:count + len(y)] = y
            count += len(y)
        self.images = self.images[:count].to(device)
        self.sizes, self.labels = self.sizes[:count].to(device), self.labels[:count].to(device)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.labels)


def _uniform(g, shape, low, high, device):
    return low + (high - low) * torch.rand(shape, generator=g, device=device)


def crop_boxes(sizes: torch.Tensor, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
               generator=None, tries: int = 10) -> torch.Tensor:
    """RandomResizedCrop's boxes (top, left, height, width), one per image of ``sizes``
    (N x 2 heights and widths), drawn as torchvision draws them: an area fraction uniform in
    ``scale``, a log-uniform aspect ratio in ``ratio``; the first of ``tries`` draws that fits,
    else the centre crop of the image clamped to ``ratio``."""
    dev, n = sizes.device, len(sizes)
    h_img, w_img = sizes[:, :1].double(), sizes[:, 1:].double()
    area = h_img * w_img * _uniform(generator, (n, tries), scale[0], scale[1], dev).double()
    log_r = _uniform(generator, (n, tries), math.log(ratio[0]), math.log(ratio[1]), dev)
    aspect = torch.exp(log_r.double())
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = fits.double().argmax(1, keepdim=True)       # the first draw that fits
    found = fits.any(1)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    u = torch.rand((n, 2), generator=generator, device=dev).double()
    top = torch.floor(u[:, 0] * (h_img[:, 0] - h + 1))
    left = torch.floor(u[:, 1] * (w_img[:, 0] - w + 1))
    # torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio
    in_ratio = w_img[:, 0] / h_img[:, 0]
    fw = torch.where(in_ratio < ratio[0], w_img[:, 0],
                     torch.where(in_ratio > ratio[1], torch.round(h_img[:, 0] * ratio[1]),
                                 w_img[:, 0]))
    fh = torch.where(in_ratio < ratio[0], torch.round(w_img[:, 0] / ratio[0]), h_img[:, 0])
    ftop, fleft = torch.floor((h_img[:, 0] - fh) / 2), torch.floor((w_img[:, 0] - fw) / 2)
    boxes = torch.stack([torch.where(found, top, ftop), torch.where(found, left, fleft),
                         torch.where(found, h, fh), torch.where(found, w, fw)], 1)
    return boxes.float()


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: int,
                  flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each image to its box (top, left, height, width, in pixels), mirror it where
    ``flip``, and resize it to ``size`` x ``size``: one bilinear sampling of the batch (float
    output, 0-255 scale)."""
    n, _, hc, wc = images.shape
    top, left, h, w = boxes.unbind(1)
    sx = w / wc
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + w) / wc - 1
    theta[:, 1, 1] = h / hc
    theta[:, 1, 2] = (2 * top + h) / hc - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def erase(x: torch.Tensor, p: float, generator=None, scale=(0.02, 0.33), ratio=(0.3, 3.3),
          value: float = 0.0, tries: int = 10) -> torch.Tensor:
    """torchvision's RandomErasing drawn for each image of the batch ``x`` on its own: with
    probability ``p`` a box of ``scale`` of the area and aspect log-uniform in ``ratio``
    (the first of ``tries`` draws that fits) is set to ``value``."""
    n, _, hh, ww = x.shape
    dev = x.device
    area = hh * ww * _uniform(generator, (n, tries), scale[0], scale[1], dev)
    aspect = torch.exp(_uniform(generator, (n, tries), math.log(ratio[0]), math.log(ratio[1]),
                                dev))
    h, w = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    fits = (h < hh) & (w < ww)
    first = fits.float().argmax(1, keepdim=True)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    on = fits.any(1) & (torch.rand(n, generator=generator, device=dev) < p)
    u = torch.rand((n, 2), generator=generator, device=dev)
    top, left = torch.floor(u[:, 0] * (hh - h + 1)), torch.floor(u[:, 1] * (ww - w + 1))
    rows = torch.arange(hh, device=dev).view(1, hh, 1)
    cols = torch.arange(ww, device=dev).view(1, 1, ww)
    box = ((rows >= top.view(n, 1, 1)) & (rows < (top + h).view(n, 1, 1))
           & (cols >= left.view(n, 1, 1)) & (cols < (left + w).view(n, 1, 1)))
    return x.masked_fill((box & on.view(n, 1, 1)).unsqueeze(1), value)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """0-255 pixels to the model's input: (x / 255 - mean) / std per channel (``mean`` and
    ``std`` as sequences, or tensors from :func:`pixel_stats`)."""
    if not isinstance(mean, torch.Tensor):
        mean, std = pixel_stats(mean, std, x.device)
    return (x.float() - mean) / std


def pixel_stats(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` (of [0, 1] pixels) as 1 x C x 1 x 1 tensors of the 0-255 scale on
    ``device``: made once, since copying them in for each batch would wait for the GPU."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255,
            torch.tensor(std, device=device).view(1, -1, 1, 1) * 255)


class DeviceTrainBatches:
    """Training batches of :class:`DeviceImages`, in the order of ``sampler`` (an
    :class:`~mobilenets.training.sampling.EpochSampler`: its (epoch, index) pairs, shard and
    start), augmented on the device: RandomResizedCrop to ``resolution`` (``scale``), a
    horizontal flip with probability ``hflip``, normalisation, RandomErasing with probability
    ``random_erasing``. Yields (images, labels, 0) like the engine's loaders."""

    def __init__(self, data: DeviceImages, sampler, batch_size: int, resolution: int,
                 mean, std, seed: int, scale=(0.08, 1.0), hflip: float = 0.5,
                 random_erasing: float = 0.0):
        self.data, self.sampler, self.batch_size = data, sampler, batch_size
        self.resolution, self.seed = resolution, seed
        self.mean, self.std = pixel_stats(mean, std, data.device)
        self.scale, self.hflip, self.random_erasing = tuple(scale), hflip, random_erasing

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self):
        keys = list(self.sampler)
        if not keys:
            return
        epoch = keys[0][0]
        order = torch.tensor([i for _, i in keys], device=self.data.device)
        first = self.sampler.start // self.batch_size
        g = torch.Generator(device=self.data.device)
        for b in range(len(order) // self.batch_size):
            step = first + b
            # seeded by (seed, epoch, step, rank): resume reproduces every draw
            g.manual_seed(((self.seed * 1_000_003 + epoch) * 100_003 + step) * 1_009
                          + getattr(self.sampler, "rank", 0))
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.batch(idx, g), self.data.labels[idx], 0

    def batch(self, idx: torch.Tensor, generator=None) -> torch.Tensor:
        """The augmented, normalised images of the items ``idx``."""
        data, n = self.data, len(idx)
        boxes = crop_boxes(data.sizes[idx], self.scale, generator=generator)
        flip = torch.rand(n, generator=generator, device=data.device) < self.hflip
        x = normalize(resized_crops(data.images[idx], boxes, self.resolution, flip),
                      self.mean, self.std)
        if self.random_erasing > 0:
            x = erase(x, self.random_erasing, generator)
        return x


class DeviceEvalBatches:
    """The items of :class:`DeviceImages` (stored at the model's input size by the eval
    transform) in order, normalised: (images on the device, labels on the CPU, 0);
    ``rank``/``world`` take every world-th item, as the engine's eval loader does."""

    def __init__(self, data: DeviceImages, batch_size: int, mean, std, rank: int = 0,
                 world: int = 1):
        self.data, self.batch_size = data, batch_size
        self.mean, self.std = pixel_stats(mean, std, data.device)
        self.index = torch.arange(rank, len(data), world, device=data.device)

    def __len__(self) -> int:
        return math.ceil(len(self.index) / self.batch_size)

    def __iter__(self):
        for b in range(0, len(self.index), self.batch_size):
            idx = self.index[b:b + self.batch_size]
            yield (normalize(self.data.images[idx], self.mean, self.std),
                   self.data.labels[idx].cpu(), 0)


__all__ = ["DeviceEvalBatches", "DeviceImages", "DeviceTrainBatches", "crop_boxes", "erase",
           "normalize", "pixel_stats", "resized_crops"]
