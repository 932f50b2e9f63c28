"""Rare-class pasting (udass.md §1.4g, §1.6.1): index, donor crops, paste positions/labels, normalisation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from src.data.rare_class_sampling import compute_class_stats, write_class_stats
from src.data.transforms import MEAN, STD
from src.uda.mixing.rare_class_paste import RareClassPaster, folder_loader, normalize_donor


def _write_pair(root: Path, stem: str, image: np.ndarray, label: np.ndarray) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "labels" / f"{stem}.png"), label)


def _index(root: Path) -> None:
    files = sorted((root / "labels").glob("*.png"))
    write_class_stats(root, compute_class_stats(files, root=root, progress=False))


def _donor_8x8() -> tuple[np.ndarray, np.ndarray]:
    """Class 12 in a 3x3 block at rows 2-4, cols 5-7 (pixel colours (10, 200, 40)); class 0 elsewhere."""
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = np.arange(64, dtype=np.uint8).reshape(8, 8)
    label = np.zeros((8, 8), np.uint8)
    label[2:5, 5:8] = 12
    image[2:5, 5:8] = (10, 200, 40)
    return image, label


@pytest.fixture
def donor_root(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    _write_pair(root, "a", *_donor_8x8())
    _index(root)
    return root


def test_normalisation_input_and_reference_bgr255() -> None:
    image = np.zeros((1, 1, 3), np.uint8)
    image[0, 0] = (10, 200, 40)  # R, G, B
    inp = normalize_donor(image, "input")[:, 0, 0]
    exp = [(10 - MEAN[0]) / STD[0], (200 - MEAN[1]) / STD[1], (40 - MEAN[2]) / STD[2]]
    assert torch.allclose(inp, torch.tensor(exp))
    ref = normalize_donor(image, "reference_bgr255")[:, 0, 0]
    # BGR channel order, minus the RGB mean vector, / 255 (udass.md §1.6.1)
    exp_ref = [(40 - MEAN[0]) / 255, (200 - MEAN[1]) / 255, (10 - MEAN[2]) / 255]
    assert torch.allclose(ref, torch.tensor(exp_ref))
    with pytest.raises(ValueError, match="normalization"):
        normalize_donor(image, "bgr")


@pytest.mark.parametrize("normalization", ["input", "reference_bgr255"])
def test_paste_positions_labels_and_donor_pixels(donor_root: Path, normalization: str) -> None:
    paster = RareClassPaster(
        root=donor_root, classes=[12], num_classes=1, min_pixels=5, normalization=normalization
    )
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.full((2, 8, 8), 1, dtype=torch.long)
    x2, y2, m = paster.paste(x, y, torch.Generator().manual_seed(0))
    block = torch.zeros(8, 8, dtype=torch.bool)
    block[2:5, 5:8] = True
    donor = normalize_donor(_donor_8x8()[0], normalization)
    for i in range(2):  # same location as in the donor (the 8x8 crop of an 8x8 donor is the donor)
        assert torch.equal(m[i], block)
        assert torch.equal(y2[i], torch.where(block, torch.tensor(12), torch.tensor(1)))
        assert torch.equal(x2[i][:, block], donor[:, block])
        assert torch.equal(x2[i][:, ~block], x[i][:, ~block])
    assert (y == 1).all()  # inputs untouched
    x3, y3 = paster(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(x3, x2) and torch.equal(y3, y2)


def test_random_crop_keeps_location_and_min_pixels(tmp_path: Path) -> None:
    """A 8x24 donor cropped to 8x8: the pasted mask is the donor's class-12 pixels of the chosen window,
    and windows with <= min_pixels pixels of the class are rejected."""
    root = tmp_path / "wide"
    image = np.zeros((8, 24, 3), np.uint8)
    image[..., 1] = np.arange(24, dtype=np.uint8)[None, :] * 10  # green encodes the donor column
    label = np.zeros((8, 24), np.uint8)
    label[:, 14:18] = 12  # 32 pixels in columns 14-17
    _write_pair(root, "w", image, label)
    _index(root)
    paster = RareClassPaster(root=root, classes=[12], num_classes=1, min_pixels=20)
    offsets = set()
    for seed in range(30):
        x = torch.zeros(1, 3, 8, 8)
        x2, y2, m = paster.paste(
            x, torch.zeros(1, 8, 8, dtype=torch.long), torch.Generator().manual_seed(seed)
        )
        cols = m[0].any(0).nonzero().flatten()
        assert int(m.sum()) > 20  # > min_pixels: at least 3 of the 4 class columns in the window
        green = x2[0, 1, 0, cols] * STD[1] + MEAN[1]  # denormalise: donor column * 10
        x0 = int(round(float(green[0]) / 10)) - int(cols[0])
        offsets.add(x0)
        assert torch.equal(m[0], torch.from_numpy(label[:, x0 : x0 + 8] == 12))
        assert (y2[0][m[0]] == 12).all() and (y2[0][~m[0]] == 0).all()
    assert offsets <= set(range(9, 16)) and len(offsets) > 1  # windows holding >= 3 class columns


def test_duplicate_classes_and_skipped_absent_class(donor_root: Path) -> None:
    # class 16 has no donor file: it is skipped; [12, 12] may paste class 12 twice (the same pixels)
    paster = RareClassPaster(root=donor_root, classes=[12, 12, 16], num_classes=3, min_pixels=5)
    assert set(paster.files) == {12}
    y = torch.zeros(1, 8, 8, dtype=torch.long)
    _, y2, m = paster.paste(torch.zeros(1, 3, 8, 8), y, torch.Generator().manual_seed(0))
    assert int(m.sum()) == 9 and (y2[m] == 12).all()


def test_missing_index_error_is_lazy_and_names_the_fix(tmp_path: Path) -> None:
    paster = RareClassPaster(root=tmp_path / "nowhere")  # built without the data (e.g. for evaluation)
    with pytest.raises(FileNotFoundError) as e:
        paster(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long), torch.Generator())
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "samples_with_class.json") in msg and "compute_class_stats.py" in msg


def test_no_eligible_class_and_crop_size_mismatch(donor_root: Path) -> None:
    with pytest.raises(ValueError, match="none of the classes"):
        _ = RareClassPaster(root=donor_root, classes=[12], min_pixels=50).files  # the block has 9 pixels
    paster = RareClassPaster(root=donor_root, classes=[12], min_pixels=5, crop_size=(16, 16))
    with pytest.raises(ValueError, match="crop_size"):
        paster(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long), torch.Generator())


def test_folder_loader_pairs_by_stem(donor_root: Path) -> None:
    image, label = folder_loader(donor_root / "labels" / "a.png")
    exp_image, exp_label = _donor_8x8()
    assert np.array_equal(image, exp_image) and np.array_equal(label, exp_label)
    with pytest.raises(FileNotFoundError, match="no image"):
        folder_loader(donor_root / "labels" / "missing.png")


def test_dataset_loader_reads_through_the_dataset_lazily(donor_root: Path) -> None:
    from functools import partial

    from src.data.datasets.folder import FolderDataset
    from src.uda.mixing.rare_class_paste import DatasetLoader

    built = []

    def factory() -> FolderDataset:
        built.append(1)
        return partial(FolderDataset, donor_root)()

    loader = DatasetLoader(dataset=factory)
    assert built == []  # nothing read before the first donor
    image, label = loader(donor_root / "labels" / "a.png")
    assert built == [1] and np.array_equal(label, _donor_8x8()[1]) and np.array_equal(image, _donor_8x8()[0])
    paster = RareClassPaster(root=donor_root, classes=[12], num_classes=1, min_pixels=5, loader=loader)
    _, y2, m = paster.paste(
        torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long), torch.Generator()
    )
    assert int(m.sum()) == 9 and built == [1]
