"""Rare (long-tail) class pasting from source donor images, the DSP ``rand_mixer`` used by UDASS QuadMix.

Source: UDASS ``ok/dacs_gta.py`` Phase B step (g) with DSP's ``rand_mixer`` and ``data/*_ids2path.json``,
udass.md §1.4g, quirks §1.6.1 and §1.6.5.

Per image of the batch:

1. Draw ``num_classes`` (2) entries **without replacement from the list** ``classes`` (GTA
   [3, 4, 5, 6, 12, 15, 16, 17, 18]; SYNTHIA [3, 3, 4, 4, 4, 4, 5, 5, 6, 7, 12, 13, 18] where repeats act as
   sampling weights, so the same class can be drawn twice, §1.6.5).
2. For each class c: a donor file uniformly among the files of the class → files index
   ``ROOT/samples_with_class.json`` (written by ``src.data.rare_class_sampling.write_class_stats``, i.e.
   ``python scripts/compute_class_stats.py ROOT``); optional resize to ``resize`` (the reference resizes
   every donor to 2048x1024, i.e. ``[1024, 2048]``); a random crop of the input size; retried with a new
   donor and crop until the crop holds more than ``min_pixels`` pixels of c (GTA 50, SYNTHIA 10). The
   reference retries forever; we stop after ``max_tries`` and skip the class for that image.
   Only files whose stored-resolution count (the index) exceeds ``min_pixels`` are candidates: a file with
   fewer pixels can never pass, so this only removes certain rejections (exactly so unless ``resize``
   enlarges the donor; the reference's 2048x1024 enlarges GTA's 1914x1052 by 4 % in area).
3. Paste: the donor's pixels of class c overwrite the image **at the same location**, and c is written into
   the label. Pixel weights are not touched: pasted pixels inherit the weight underneath (reference).

Donor normalisation, ``normalization``:

- ``"input"`` (default, the fix): exactly the network input normalisation of ``src.data.transforms.to_tensor``
  (RGB, (x − mean) / std with the ImageNet mean/std on the 0..255 scale).
- ``"reference_bgr255"`` (the reference quirk §1.6.1): channels in BGR order, minus the *RGB* mean vector,
  divided by 255, so pasted objects have the wrong colour order and a ~58x compressed contrast.

All randomness goes through the explicit CPU ``torch.Generator``; the index is read lazily on the first call
(a module built from a checkpoint for evaluation does not need the source data).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from src.data.datasets.folder import IMAGE_SUFFIXES, read_image, read_label
from src.data.rare_class_sampling import SAMPLES_WITH_CLASS_FILE
from src.data.transforms import MEAN, to_tensor

log = logging.getLogger(__name__)

NORMALIZATIONS = ("input", "reference_bgr255")
Loader = Callable[[Path], tuple[np.ndarray, np.ndarray]]


def folder_loader(label_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Folder-format donor ``<dir>/labels/<stem>.png`` -> (RGB image ``<dir>/images/<stem>.*``, label)."""
    label_path = Path(label_path)
    img_dir = label_path.parent.parent / "images"
    for suffix in IMAGE_SUFFIXES:
        img_path = img_dir / f"{label_path.stem}{suffix}"
        if img_path.is_file():
            break
    else:
        raise FileNotFoundError(
            f"rare-class donor {label_path} has no image {img_dir / label_path.stem}.{{png,jpg,jpeg}}; "
            f"the folder format needs images/ and labels/ with the same stems (or pass a custom loader)"
        )
    image, label = read_image(img_path), read_label(label_path)
    if image.shape[:2] != label.shape:
        raise ValueError(
            f"donor image {img_path} is {image.shape[:2]} but label {label_path} is {label.shape}"
        )
    return image, label


class DatasetLoader:
    """Donor loader through the source dataset's own reader (GTA5, SYNTHIA, folder, ...), built on first use.

    ``dataset``: a dataset object or a zero-argument factory (Hydra ``_partial_: true``, e.g.
    ``${data.source}``) with ``root``, ``index_of(key)`` and ``load(i)``; the donor path is looked up by its
    path relative to ``root``, the key the rare-class statistics use. Building lazily keeps evaluation-only
    module loads free of the source data.
    """

    def __init__(self, *, dataset: Any) -> None:
        self._factory = dataset if callable(dataset) and not hasattr(dataset, "load") else None
        self._dataset = None if self._factory is not None else dataset

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            self._dataset = self._factory()
        return self._dataset

    def use(self, dataset: Any) -> None:
        """Read donors through ``dataset`` from now on (e.g. the data module's packed source split)."""
        self._factory, self._dataset = None, dataset

    def __call__(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        ds = self.dataset
        key = Path(path).relative_to(Path(ds.root)).as_posix()
        image, label = ds.load(ds.index_of(key))
        if label is None:
            raise ValueError(f"rare-class donor {path}: the dataset {type(ds).__name__} returned no label")
        return image, label


def normalize_donor(image: np.ndarray, normalization: str = "input") -> Tensor:
    """RGB uint8 HxWx3 -> normalised float32 3xHxW, as the network input or as the reference's BGR/255."""
    if normalization == "input":
        return to_tensor(image)
    if normalization == "reference_bgr255":
        bgr = np.ascontiguousarray(image[..., ::-1]).astype(np.float32)
        bgr = (bgr - np.asarray(MEAN, dtype=np.float32)) / 255.0  # RGB mean on BGR channels (§1.6.1)
        return torch.from_numpy(bgr).permute(2, 0, 1).contiguous()
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


class RareClassPaster:
    """DSP-style rare-class copy-paste from source donors (UDASS QuadMix step g, udass.md §1.4g).

    Args:
        root: source dataset root holding ``samples_with_class.json``; its file names are relative to it.
        classes: candidate classes, repeats are sampling weights (GTA list by default, §1.4g).
        num_classes: classes pasted per image (2, §1.5).
        min_pixels: a donor crop must hold more than this many pixels of the class (GTA 50, SYNTHIA 10).
        normalization: ``"input"`` (default, fixed) or ``"reference_bgr255"`` (reference quirk §1.6.1).
        loader: ``path -> (RGB uint8 HxWx3, uint8 HxW train ids)``, called with ``root / file``; default
            :func:`folder_loader`; :class:`DatasetLoader` reads through the source dataset class.
        crop_size: donor crop (h, w); None = the image size of each call (must equal it when given).
        resize: donor resize (h, w) before cropping (reference: (1024, 2048)); None = stored resolution.
        max_tries: donor draws per class before giving up on it for that image (reference: unbounded).
        ignore_index: label padding value when a donor is smaller than the crop.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        classes: Sequence[int] = (3, 4, 5, 6, 12, 15, 16, 17, 18),
        num_classes: int = 2,
        min_pixels: int = 50,
        normalization: str = "input",
        loader: Loader | None = None,
        crop_size: Sequence[int] | None = None,
        resize: Sequence[int] | None = None,
        max_tries: int = 20,
        ignore_index: int = 255,
    ) -> None:
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if num_classes < 0 or max_tries < 1:
            raise ValueError("num_classes must be >= 0 and max_tries >= 1")
        if not classes:
            raise ValueError("classes is empty: give at least one rare class id")
        self.root = Path(root)
        self.classes = [int(c) for c in classes]
        self.num_classes = int(num_classes)
        self.min_pixels = int(min_pixels)
        self.normalization = normalization
        self.loader: Loader = loader or folder_loader
        self.crop_size = tuple(int(v) for v in crop_size) if crop_size is not None else None
        self.resize = tuple(int(v) for v in resize) if resize is not None else None
        self.max_tries = int(max_tries)
        self.ignore_index = int(ignore_index)
        self._files: dict[int, list[str]] | None = None

    def use_dataset(self, dataset: Any) -> None:
        """Draw donors from ``dataset`` (the data module's source split, e.g. LitData chunks when streaming):
        the class -> files index is read from its statistics folder (``stats_root``, else ``root``) and the
        donors through a :class:`DatasetLoader` on it."""
        if not isinstance(self.loader, DatasetLoader):
            raise ValueError(
                f"rare-class pasting reads donors with {self.loader!r}, which cannot read the data module's "
                f"source split: use the DatasetLoader of conf/uda/mix/quadmix.yaml "
                f"(uda.mix.rare_paster.loader)"
            )
        self.loader.use(dataset)
        self.root = Path(getattr(dataset, "stats_root", dataset.root))
        self._files = None

    # ------------------------------------------------------------------ index
    @property
    def index_path(self) -> Path:
        return self.root / SAMPLES_WITH_CLASS_FILE

    @property
    def files(self) -> dict[int, list[str]]:
        """{class: donor files relative to ``root``} for the classes of ``classes`` (loaded on first use)."""
        if self._files is None:
            self._files = self._load_index()
        return self._files

    def _load_index(self) -> dict[int, list[str]]:
        path = self.index_path
        if not path.is_file():
            raise FileNotFoundError(
                f"rare-class pasting needs the class -> files index {path}, which does not exist: a folder "
                f"dataset writes it at the start of training; otherwise run "
                f"`python scripts/compute_class_stats.py {self.root}` (writes {SAMPLES_WITH_CLASS_FILE}), or "
                f"disable the paster with uda.mix.rare_paster=null"
            )
        raw = json.loads(path.read_text())
        files: dict[int, list[str]] = {}
        missing = []
        for c in sorted(set(self.classes)):
            entries = raw.get(str(c), [])
            eligible = [str(f) for f, n in entries if int(n) > self.min_pixels]
            if eligible:
                files[c] = eligible
            else:
                missing.append(c)
        if missing:
            log.warning(
                "rare-class pasting: no file in %s has > %d pixels of class(es) %s; they are never pasted",
                path,
                self.min_pixels,
                missing,
            )
        if not files:
            raise ValueError(
                f"rare-class pasting: none of the classes {sorted(set(self.classes))} has a donor file in "
                f"{path}; choose classes present in the source data or lower min_pixels"
            )
        return files

    # ------------------------------------------------------------------ donors
    def _randint(self, high: int, generator: torch.Generator) -> int:
        return int(torch.randint(high, (1,), generator=generator).item())

    def sample_donor(
        self, class_id: int, size_hw: tuple[int, int], generator: torch.Generator
    ) -> tuple[Tensor, Tensor] | None:
        """A normalised donor crop (3,h,w) float32 and its label (h,w) long holding > min_pixels of the class.

        None when the class has no donor file or no crop passed within ``max_tries`` draws.
        """
        files = self.files.get(int(class_id))
        if not files:
            return None
        ch, cw = size_hw
        for _ in range(self.max_tries):
            image, label = self.loader(self.root / files[self._randint(len(files), generator)])
            if self.resize is not None:
                rh, rw = self.resize
                image = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_LINEAR)
                label = cv2.resize(label, (rw, rh), interpolation=cv2.INTER_NEAREST)
            h, w = label.shape
            if h < ch or w < cw:  # pad bottom/right like the input pipeline (image 0, label ignore)
                ph, pw = max(ch - h, 0), max(cw - w, 0)
                image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0)
                label = np.pad(label, ((0, ph), (0, pw)), constant_values=self.ignore_index)
                h, w = label.shape
            y0 = self._randint(h - ch + 1, generator)
            x0 = self._randint(w - cw + 1, generator)
            lab = label[y0 : y0 + ch, x0 : x0 + cw]
            if int((lab == class_id).sum()) > self.min_pixels:
                img = normalize_donor(image[y0 : y0 + ch, x0 : x0 + cw], self.normalization)
                return img, torch.from_numpy(np.ascontiguousarray(lab).astype(np.int64))
        return None

    # ------------------------------------------------------------------ pasting
    def paste(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Paste rare classes into each image -> new (x (B,3,H,W), y (B,H,W) long, pasted mask (B,H,W) bool).

        The inputs are not modified. The class draw per image is ``num_classes`` positions of ``classes``
        without replacement (duplicates in the list can give the same class twice).
        """
        squeeze = y.dim() == 4
        y = y.squeeze(1) if squeeze else y
        h, w = x.shape[-2:]
        if self.crop_size is not None and self.crop_size != (h, w):
            raise ValueError(f"rare_paster.crop_size={self.crop_size} but the mixed images are {(h, w)}")
        (x,), (y,), pasted = self.paste_frames([x], [y.long()], generator)
        return x, (y.unsqueeze(1) if squeeze else y), pasted

    def paste_frames(
        self, xs: list[Tensor], ys: list[Tensor], generator: torch.Generator
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """:meth:`paste` with the same donors into every image of ``xs`` / ``ys`` (the frames of a clip,
        video QuadMix, udass.md §2.6.4 step 3): new lists (inputs unmodified) and the pasted mask (B,H,W)."""
        b, _, h, w = xs[0].shape
        xs, ys = [x.clone() for x in xs], [y.clone() for y in ys]
        pasted = torch.zeros((b, h, w), dtype=torch.bool, device=xs[0].device)
        k = min(self.num_classes, len(self.classes))
        for i in range(b):
            for pos in torch.randperm(len(self.classes), generator=generator)[:k].tolist():
                c = self.classes[pos]
                donor = self.sample_donor(c, (h, w), generator)
                if donor is None:
                    continue
                img, lab = donor
                m = lab.to(pasted.device) == c
                for x, y in zip(xs, ys, strict=True):
                    x[i] = torch.where(m, img.to(device=x.device, dtype=x.dtype), x[i])
                    y[i] = torch.where(m, torch.full_like(y[i], c), y[i])
                pasted[i] |= m
        return xs, ys, pasted

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x, y) with rare-class donor pixels and labels pasted (see :meth:`paste`)."""
        x, y, _ = self.paste(x, y, generator)
        return x, y
