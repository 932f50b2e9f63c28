"""Video clip data: the three release layouts (VIPER, SYNTHIA-Seq, Cityscapes-Seq) as tiny fake trees in
their original formats, the generic clip folder, the synthetic clips' exact flows, and the video data module's
batches against the video batch contract (src/data/video_datamodule.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import default_collate

from src.data.classes import EVAL_SUBSETS, SYNTHIA_SEQ12_CLASSES, VIPER15_CLASSES
from src.data.datasets.cityscapes_seq import CityscapesSeqDataset
from src.data.datasets.clip_folder import ClipFolderDataset
from src.data.datasets.synthetic_video import render_clip
from src.data.datasets.synthia_seq import SynthiaSeqDataset
from src.data.datasets.viper_seq import ViperSeqDataset, remove_ego_vehicle
from src.data.flow import compute_dis_flow, endpoint_error, warp, write_flow
from src.data.transforms import normalize_batch
from src.data.video_datamodule import ClipTrainTransform, FlowOptions, target_keys
from src.metrics.miou import resolve_subsets
from tests.conftest import compose_cfg


def _write_rgb(path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def _const_frame(value: int, h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _const_flow(u: float, v: float, h: int, w: int) -> np.ndarray:
    f = np.zeros((h, w, 2), np.float32)
    f[..., 0], f[..., 1] = u, v
    return f


# ------------------------------------------------------------------------------------------------------------
# VIPER
# ------------------------------------------------------------------------------------------------------------
def _viper_tree(root, h=36, w=64):
    """One sequence 001 with labelled frames 00010 (current) and 00009 (previous), palette PNG labels."""
    ids = np.full((h, w), 3, np.uint8)  # road
    ids[:6] = 2  # sky
    ids[6:12, :16] = 7  # tree -> vegetation
    ids[6:12, 16:32] = 8  # vegetation
    ids[12:18, 40:50] = 24  # a car ahead
    ids[28:, 20:44] = 24  # the ego vehicle: a car component holding the bottom-centre pixel
    ids[12:18, 52:60] = 25  # van: ignored
    ids[20:24, 2:6] = 20  # person
    for frame in (9, 10):
        img = np.random.default_rng(frame).integers(0, 255, (h, w, 3), dtype=np.uint8)
        _write_rgb(root / "train" / "img" / "001" / f"001_{frame:05d}.jpg", img)
        lab = Image.fromarray(ids, mode="P")
        lab.putpalette(np.random.default_rng(0).integers(0, 255, 768).astype(np.uint8).tolist())
        (root / "train" / "cls" / "001").mkdir(parents=True, exist_ok=True)
        lab.save(root / "train" / "cls" / "001" / f"001_{frame:05d}.png")
    write_flow(root / "flows" / "001_0001000009_int16_x10.npy", _const_flow(1.5, -0.5, 18, 32))
    return ids


def test_viper_clips_map_15_classes_remove_the_ego_vehicle_and_ignore_vans(tmp_path):
    ids = _viper_tree(tmp_path)
    ds = ViperSeqDataset(tmp_path)
    assert len(ds) == 1 and ds.name(0) == "001_00010"
    assert ds.frame_path(0, 1).name == "001_00009.jpg"
    assert ds.flow_path(0, 0, 1).name == "001_0001000009_int16_x10.npy"  # no separator (§2.2)
    ds.verify((0, 1), (0, 1), ((0, 1),))
    clip = ds.load_clip(0, (0, 1), (0, 1), ((0, 1),))
    lab = clip.labels[0]
    assert clip.frames[0].shape == (36, 64, 3) and lab.shape == (36, 64)
    assert (lab[30:, 20:44] == 255).all()  # ego vehicle -> unlabelled
    assert (lab[12:18, 40:50] == VIPER15_CLASSES.index("car")).all()  # another car stays a car
    assert (lab[12:18, 52:60] == 255).all()  # van ignored, not car
    assert (lab[6:12, :32] == VIPER15_CLASSES.index("vegetation")).all()  # tree and vegetation
    assert (lab[:6] == VIPER15_CLASSES.index("sky")).all() and lab[20, 3] == VIPER15_CLASSES.index("person")
    assert np.array_equal(clip.labels[1], lab)
    np.testing.assert_allclose(clip.flows[(0, 1)][..., 0], 1.5)
    np.testing.assert_allclose(clip.flows[(0, 1)][..., 1], -0.5)
    # ego-vehicle removal only touches the component under the bottom-centre pixel
    out = remove_ego_vehicle(ids)
    assert (out[28:, 20:44] == 0).all() and (out[12:18, 40:50] == 24).all()


def test_viper_missing_previous_frame_and_flow_are_named(tmp_path):
    _viper_tree(tmp_path)
    (tmp_path / "train" / "img" / "001" / "001_00009.jpg").unlink()
    ds = ViperSeqDataset(tmp_path, flow_dir=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"001_00009\.jpg.*\*\[2-9\] image package"):
        ds.verify((0, 1))
    with pytest.raises(FileNotFoundError, match=r"001_0001000009_int16_x10\.npy.*compute_flow\.py viper_seq"):
        ds.verify((0,), (), ((0, 1),))
    rgb = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
    rgb.save(tmp_path / "train" / "cls" / "001" / "001_00010.png")
    with pytest.raises(ValueError, match="palette PNGs"):
        ds.read_label(tmp_path / "train" / "cls" / "001" / "001_00010.png")


# ------------------------------------------------------------------------------------------------------------
# SYNTHIA-Seq
# ------------------------------------------------------------------------------------------------------------
def _synthia_tree(root, h=48, w=64, cut=8):
    cam = "Stereo_Left/Omni_F"
    for n in range(3):
        _write_rgb(root / "RGB" / cam / f"{n:06d}.png", _const_frame(10 * n + 5, h, w))
        lab = np.zeros((h, w, 3), np.uint16)  # B, G, R as OpenCV writes it: class id in R (index 2)
        lab[..., 2] = 3  # road
        lab[:10, :, 2] = 1  # sky
        lab[10:20, :20, 2] = 5  # fence
        lab[10:20, 20:40, 2] = 11  # bicycle -> rider
        lab[10:20, 40:, 2] = 12  # lanemarking -> ignored
        lab[..., 1] = 777  # instance ids in G must not leak into the class
        lab[h - cut :, :, 2] = 8  # car in the rows that are cut
        (root / "GT" / "LABELS" / cam).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "GT" / "LABELS" / cam / f"{n:06d}.png"), lab)
    write_flow(root / "flows" / "000002_int16_x10.npy", _const_flow(0.7, 0.2, 20, 32))


def test_synthia_seq_reads_16bit_labels_in_the_release_layout_and_cuts_the_bottom(tmp_path):
    _synthia_tree(tmp_path)
    ds = SynthiaSeqDataset(tmp_path, cut_bottom=8)
    assert [ds.name(i) for i in range(len(ds))] == ["000001", "000002"]  # frame 0 is only a previous frame
    assert ds.flow_path(1, 0, 1).name == "000002_int16_x10.npy"
    ds.verify((0, 1), (0, 1), ())
    clip = ds.load_clip(1, (0, 1), (0, 1), ((0, 1),))
    assert clip.frames[0].shape == (40, 64, 3) and clip.labels[0].shape == (40, 64)
    assert clip.frames[0][0, 0, 0] == 25 and clip.frames[1][0, 0, 0] == 15  # t = 2, t-1 = 1
    lab = clip.labels[0]
    c = SYNTHIA_SEQ12_CLASSES.index
    assert (lab[:10] == c("sky")).all() and (lab[10:20, :20] == c("fence")).all()
    assert (lab[10:20, 20:40] == c("rider")).all() and (lab[10:20, 40:] == 255).all()
    assert (lab[20:] == c("road")).all()  # the car rows were cut
    np.testing.assert_allclose(clip.flows[(0, 1)][..., 0], 0.7)


# ------------------------------------------------------------------------------------------------------------
# Cityscapes-Seq
# ------------------------------------------------------------------------------------------------------------
def _cityscapes_tree(root, split="val", city="frankfurt", seq="000000", t=294, n_prev=1, h=32, w=64):
    for k in range(n_prev + 1):
        p = root / "leftImg8bit_sequence" / split / city / f"{city}_{seq}_{t - k:06d}_leftImg8bit.png"
        _write_rgb(p, _const_frame(t - k, h, w) if t - k < 256 else _const_frame((t - k) % 256, h, w))
    ids = np.full((h, w), 7, np.uint8)  # road
    ids[:8, :16] = 24  # person
    ids[:8, 16:32] = 25  # rider
    ids[:8, 32:48] = 13  # fence
    ids[:8, 48:] = 12  # wall
    ids[8:16, :16] = 22  # terrain
    p = root / "gtFine" / split / city / f"{city}_{seq}_{t:06d}_gtFine_labelIds.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(p), ids)


def test_cityscapes_seq_protocols_merge_rider_and_drop_fence_at_eval(tmp_path):
    _cityscapes_tree(tmp_path)
    write_flow(tmp_path / "flows" / "frankfurt_000000_000294_000293_int16_x10.npy", _const_flow(2, 1, 16, 32))
    viper = CityscapesSeqDataset(tmp_path, split="val", labels=True, protocol="viper15")
    assert len(viper) == 1 and viper.name(0) == "frankfurt_000000_000294"
    assert viper.frame_path(0, 1).name == "frankfurt_000000_000293_leftImg8bit.png"  # frame number - 1
    viper.verify((0, 1), (0,), ((0, 1),))
    clip = viper.load_clip(0, (0, 1), (0,), ((0, 1),))
    lab = clip.labels[0]
    person = VIPER15_CLASSES.index("person")
    assert (lab[:8, :32] == person).all()  # rider -> person (info_Viper.json)
    assert (lab[:8, 32:48] == VIPER15_CLASSES.index("fence")).all() and (
        lab[:8, 48:] == 255
    ).all()  # wall ignored
    assert (lab[8:16, :16] == VIPER15_CLASSES.index("terrain")).all()
    syn = CityscapesSeqDataset(tmp_path, split="val", labels=True, protocol="synthia12")
    lab = syn.load_clip(0, (0,), (0,)).labels[0]
    c = SYNTHIA_SEQ12_CLASSES.index
    assert (lab[:8, :16] == c("person")).all() and (lab[:8, 16:32] == c("rider")).all()
    assert (lab[:8, 32:48] == c("fence")).all() and (lab[8:16, :16] == 255).all()  # terrain ignored
    # evaluation protocols: 15 classes; 12 trained, 11 evaluated (fence, index 3, dropped)
    assert resolve_subsets(["15"], 15)["15"] == tuple(range(15))
    eleven = resolve_subsets(["11"], 12)["11"]
    assert len(eleven) == 11 and 3 not in eleven and EVAL_SUBSETS["11"] == eleven
    with pytest.raises(ValueError, match="protocol"):
        CityscapesSeqDataset(tmp_path, split="val", protocol="nope")


@pytest.mark.parametrize("interval", [1, 2])
def test_target_frame_pairing_for_each_interval(tmp_path, interval):
    """Target clips read t, t-1, t-Δ, t-Δ-1 and the flows t->t-1, t->t-Δ, t-Δ->t-Δ-1, t->t-Δ-1 by name."""
    _cityscapes_tree(tmp_path, split="train", city="aachen", t=19, n_prev=3)
    ds = CityscapesSeqDataset(tmp_path, split="train", labels=False, flow_dir=tmp_path / "flows")
    frames, flows = target_keys(interval)
    pairs = tuple(dict.fromkeys(flows.values()))
    names = {ds.flow_path(0, a, b).name for a, b in pairs}
    expected = {1: {"019_000018", "018_000017", "019_000017"}, 2: {"019_000018", "019_000017", "017_000016",
                                                                    "019_000016"}}[interval]  # fmt: skip
    assert names == {f"aachen_000000_000{e}_int16_x10.npy" for e in expected}
    for a, b in pairs:  # encode the pair in the flow: u = t-a, v = t-b
        write_flow(ds.flow_path(0, a, b), _const_flow(19 - a, 19 - b, 32, 64))  # at the frame size
    ds.verify(tuple(frames.values()), (), pairs)
    clip = ds.load_clip(0, tuple(dict.fromkeys(frames.values())), (), pairs)
    assert sorted(clip.frames) == sorted(set(frames.values()))  # only the frames needed
    tf = ClipTrainTransform(crop_size=(32, 64), scale=None, cat_max_ratio=1.0, flow=FlowOptions())
    tf.base.flip_p = 0.0
    out = tf(clip, np.random.default_rng(0), frame_keys=frames, flow_keys=flows)
    for key, k in frames.items():
        assert int(out[key][0, 0, 0]) == 19 - k, key
    for key, (a, b) in flows.items():
        assert out[key][0].unique().tolist() == [19 - a] and out[key][1].unique().tolist() == [19 - b], key


# ------------------------------------------------------------------------------------------------------------
# Transforms: one resize / crop / flip for frames and flows
# ------------------------------------------------------------------------------------------------------------
def _texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), np.float32)
    for cell, amp in ((16, 60), (5, 30)):
        small = rng.standard_normal((h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        acc += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(128 + acc, 0, 255).astype(np.uint8)


def test_flows_are_resized_cropped_and_flipped_with_the_frames(tmp_path):
    """A translating texture: after resize x0.5, crop and flip, the flow still warps img_prev onto img."""
    h, w, dx, dy = 96, 192, 6.0, -4.0
    prev = _texture(h, w)
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    cur = cv2.warpAffine(
        prev, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
    root = tmp_path / "clips"
    _write_rgb(root / "frames" / "seq_000001.png", prev)
    _write_rgb(root / "frames" / "seq_000002.png", cur)
    # stored at half resolution, in its pixels, as the published flows (video_uda.md §2.1)
    write_flow(
        root / "flows" / "seq_000002_000001_int16_x10.npy", _const_flow(dx / 2, dy / 2, h // 2, w // 2)
    )
    ds = ClipFolderDataset(root, labels=False)
    clip = ds.load_clip(0, (0, 1), (), ((0, 1),))
    opts = FlowOptions()
    tf = ClipTrainTransform(crop_size=(40, 64), scale=(96, 48), cat_max_ratio=1.0, flow=opts, uint8=False)
    tf.base.flip_p = 1.0
    out = tf(clip, np.random.default_rng(0), frame_keys={"img": 0, "img_prev": 1}, flow_keys={"flow": (0, 1)})
    assert out["img"].shape == (3, 40, 64) and out["flow"].shape == (2, 40, 64)
    u, v = out["flow"][0].unique(), out["flow"][1].unique()
    assert v.tolist() == [pytest.approx(dy / 2)]  # resized with the frames (96x192 -> 48x96)
    assert u.tolist() == [pytest.approx(-dx / 2)]  # flipped: u negated
    err = (warp(out["img_prev"][None], out["flow"][None])[0] - out["img"]).abs()[:, 6:-6, 6:-6].mean()
    assert err < 0.08  # normalised units
    with pytest.raises(TypeError):  # the data-level flip quirk is gone (Hydra: unknown key data.flow.*)
        FlowOptions(tps_flip_quirk=True)


# ------------------------------------------------------------------------------------------------------------
# Synthetic clips: exact flows
# ------------------------------------------------------------------------------------------------------------
def _warp_error(frame_t: np.ndarray, frame_s: np.ndarray, flow: np.ndarray, visible: np.ndarray) -> float:
    """Mean |warp(frame_s, flow) - frame_t| (0..255) over visible pixels away from layer edges."""
    src = torch.from_numpy(frame_s).permute(2, 0, 1)[None].float()
    f = torch.from_numpy(flow).permute(2, 0, 1)[None]
    warped = warp(src, f)[0].permute(1, 2, 0).numpy()
    keep = cv2.erode(visible.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return float(np.abs(warped - frame_t.astype(np.float32)).mean(-1)[keep].mean())


@pytest.fixture(scope="module")
def rendered_clips():
    return {
        dom: [
            render_clip(np.random.default_rng([7, i]), domain=dom, height=128, width=256, num_frames=3)
            for i in range(6)
        ]  # fmt: skip
        for dom in ("source", "target")
    }


def test_warping_t_minus_1_with_the_ground_truth_flow_reproduces_t(rendered_clips):
    report = {}
    for dom, clips in rendered_clips.items():
        errs, shares, mags = [], [], []
        for c in clips:
            for a, b in ((0, 1), (0, 2), (1, 2)):
                flow, visible = c.flow(a, b)
                errs.append(_warp_error(c.frame(a), c.frame(b), flow, visible))
                shares.append(visible.mean())
                mags.append(np.abs(flow).max())
        report[dom] = (np.mean(errs), np.mean(shares), np.max(mags))
        print(f"\n{dom}: warp MAE {np.mean(errs):.2f} / 255 over {np.mean(shares):.1%} visible pixels, "
              f"max |flow| {np.max(mags):.1f} px")  # fmt: skip
        assert np.mean(shares) > 0.85 and np.max(mags) > 2  # the clips move
    assert report["source"][0] < 2.0  # resampling only
    assert report["target"][0] < 6.0  # + the target's sensor noise (sigma 4 per frame)
    # a wrong flow (zero, or the flow of another pair) warps much worse
    c = rendered_clips["source"][0]
    flow, visible = c.flow(0, 1)
    assert _warp_error(c.frame(0), c.frame(1), np.zeros_like(flow), visible) > 2 * report["source"][0]


def test_dis_flow_is_close_to_the_synthetic_ground_truth(rendered_clips):
    for dom, clips in rendered_clips.items():
        epe = np.mean([endpoint_error(compute_dis_flow(c.frame(0), c.frame(1), "medium"), *c.flow(0, 1))
                       for c in clips])  # fmt: skip
        zero = np.mean([endpoint_error(np.zeros_like(c.flow(0, 1)[0]), *c.flow(0, 1)) for c in clips])
        print(f"\n{dom}: DIS medium EPE {epe:.3f} px (zero flow: {zero:.3f} px)")
        assert epe < 1.0 and epe < 0.5 * zero


def test_synthetic_clips_camera_fixed_hood_has_zero_flow(rendered_clips):
    hooded = [c for c in rendered_clips["target"] if (c.owners[-1] < 0).any()]
    for c in hooded:
        flow, visible = c.flow(0, 1)
        hood = c.owners[-1] < 0
        assert (flow[hood] == 0).all() and visible[hood].all() and (c.label(0)[hood] == 255).all()


# ------------------------------------------------------------------------------------------------------------
# The video data module on data=synthetic_video
# ------------------------------------------------------------------------------------------------------------
TINY = [
    "data.prepare.num_source=4",
    "data.prepare.num_target=4",
    "data.prepare.num_val=2",
    "data.prepare.height=64",
    "data.prepare.width=128",
    "data.crop_size=[48,64]",
    "data.num_workers=0",
]


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    return tmp_path_factory.mktemp("videodata")


def _datamodule(video_root, *overrides, rcs=None):
    base = [f"paths.data_dir={video_root}", "paths.output_dir=/tmp/x", "data=synthetic_video"]
    cfg = compose_cfg("train", [*base, *TINY, *overrides])
    dm = instantiate(cfg.data, rcs=rcs or {}, seed=0, _recursive_=True)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _train_batch(dm, n=2):
    ds = dm.train_dataset()
    return default_collate([ds[i] for i in range(n)])


S_KEYS = {"img", "gt", "img_prev", "gt_prev", "flow"}
T_KEYS = {"img", "img_prev", "img_k", "img_k_prev", "flow", "flow_k", "flow_k_prev", "flow_kk", "valid"}


@pytest.mark.parametrize("overrides", [[], ["data.interval=2", "data.flow.source=dis"]])
def test_datamodule_batches_match_the_contract(video_root, overrides):
    dm = _datamodule(video_root, *overrides)
    batch = _train_batch(dm)
    assert set(batch) == {"source", "target"}
    s, t = batch["source"], batch["target"]
    assert set(s) == S_KEYS and set(t) == T_KEYS
    for key in ("img", "img_prev"):
        assert s[key].shape == (2, 3, 48, 64) and s[key].dtype == torch.uint8  # normalised on the device
    for key in ("img", "img_prev", "img_k", "img_k_prev"):
        assert t[key].shape == (2, 3, 48, 64) and t[key].dtype == torch.uint8
    for key in ("gt", "gt_prev"):
        assert s[key].shape == (2, 48, 64) and s[key].dtype == torch.uint8
    assert s["flow"].shape == (2, 2, 48, 64) and s["flow"].dtype == torch.float32
    for key in ("flow", "flow_k", "flow_k_prev", "flow_kk"):
        assert t[key].shape == (2, 2, 48, 64) and t[key].dtype == torch.float32
        assert t[key].abs().amax() > 0.1  # the clips move
    assert t["valid"].shape == (2, 48, 64)
    if dm.interval == 1:
        assert torch.equal(t["flow_k"], t["flow"]) and torch.equal(t["img_k"], t["img_prev"])
    else:
        assert not torch.equal(t["img_k"], t["img_prev"])
    # on the device (UDAModule.on_after_batch_transfer): float images, int64 labels, flows unchanged
    dev = normalize_batch(batch)
    assert dev["source"]["img_prev"].dtype == torch.float32 and dev["source"]["gt_prev"].dtype == torch.int64
    assert dev["target"]["img_k_prev"].dtype == torch.float32 and torch.equal(
        dev["target"]["flow"], t["flow"]
    )
    assert ((s["gt"] < 19) | (s["gt"] == 255)).all() and (s["gt_prev"] != 255).any()
    # validation: frames at the input resolution, full-resolution labels, a name
    loader = dm.val_dataloader()
    vb = next(iter(loader))
    assert set(vb) == {"img", "img_prev", "flow", "gt", "name"}
    assert vb["img"].shape == (1, 3, 64, 128) and vb["img_prev"].shape == (1, 3, 64, 128)
    assert vb["flow"].shape == (1, 2, 64, 128) and vb["gt"].shape == (1, 64, 128)
    assert vb["name"] == ["val_000000_000019"]


def test_datamodule_reads_exact_flows_from_the_files(video_root):
    dm = _datamodule(video_root)
    clip = dm.val.load_clip(0, (0, 1), (0,), ((0, 1),))
    flow = clip.flows[(0, 1)]
    err = _warp_error(clip.frames[0], clip.frames[1], flow, np.ones(flow.shape[:2], bool))
    dis = compute_dis_flow(clip.frames[0], clip.frames[1])
    assert endpoint_error(dis, flow) < 1.0  # the files hold the flow of these frames
    assert err < 12  # every pixel, occlusions included: still close


def test_rare_class_sampling_over_the_source_clips_current_frames(video_root):
    rcs = {"enabled": True, "temperature": 0.01, "min_pixels": 20, "min_crop_ratio": 0.5}
    dm = _datamodule(video_root, rcs=rcs)
    sampler = dm.rare_class_sampler()
    assert sampler is not None and len(sampler.classes) > 3
    keys = {key for c in sampler.classes for key in sampler.files_for(c)}
    assert keys <= {f"labels/source_{i:06d}_000019.png" for i in range(4)}  # current frames only
    ds = dm.train_dataset()
    hits = 0
    for i in range(8):
        rng = ds.rng(i)
        cls, _ = sampler.sample(rng)
        hits += int((ds[i]["source"]["gt"] == cls).any())
    assert hits >= 6  # the crop retries keep the sampled class in the crop


def test_missing_flow_file_names_the_file_and_the_command(video_root, tmp_path):
    import shutil

    dm = _datamodule(video_root)
    root = tmp_path / "copy"
    shutil.copytree(dm.source.root.parent, root)
    (root / "target" / "flows" / "target_000001_000019_000017_int16_x10.npy").unlink()
    cfg = compose_cfg("train", ["data=synthetic_video", *TINY, f"data.root={root}", "data.prepare=null",
                                "paths.output_dir=/tmp/x"])  # fmt: skip
    dm = instantiate(cfg.data, rcs={}, seed=0, _recursive_=True)
    with pytest.raises(
        FileNotFoundError, match=r"target_000001_000019_000017_int16_x10\.npy.*compute_flow\.py clip_folder"
    ):
        dm.setup("fit")
    with pytest.raises(FileNotFoundError, match=r"frame file.*data\.interval"):
        cfg = OmegaConf.merge(cfg, {"data": {"interval": 3}})
        instantiate(cfg.data, rcs={}, seed=0, _recursive_=True).setup("fit")


# ------------------------------------------------------------------------------------------------------------
# Scripts: prepare_data.py (video source statistics) and compute_flow.py
# ------------------------------------------------------------------------------------------------------------
def test_prepare_data_writes_current_frame_statistics_of_viper_clips(tmp_path, capsys):
    import json

    from scripts.prepare_data import main

    _viper_tree(tmp_path)
    assert main(["viper_seq", str(tmp_path), "--workers", "1", "--no-progress"]) == 0
    stats = json.loads((tmp_path / "sample_class_stats.json").read_text())
    assert [s["file"] for s in stats] == ["train/cls/001/001_00010.png"]  # the current frame only
    counts = {int(c): n for c, n in stats[0]["counts"].items()}
    assert counts[VIPER15_CLASSES.index("car")] == 60 and max(counts) < 15  # ego vehicle and van left out
    assert "1 clips checked" in capsys.readouterr().out
    ds = ViperSeqDataset(tmp_path)
    assert ds.index_of("train/cls/001/001_00010.png") == 0
    assert main(["synthia_seq", str(tmp_path / "missing"), "--no-progress"]) == 1


def test_compute_flow_writes_the_published_names_and_matches_the_ground_truth(video_root, tmp_path):
    from scripts.compute_flow import compute_flows, flow_pairs

    dm = _datamodule(video_root)
    target = dm.target.root
    assert flow_pairs("target", 2) == [(0, 1), (0, 2), (2, 3), (0, 3)]
    r = compute_flows("clip_folder", target, out=tmp_path / "dis", role="target", interval=1, workers=1,
                      progress=False)  # fmt: skip
    assert r["computed"] == 4 * 3 and r["sec_per_pair"] > 0  # 19->18, 19->17, 18->17 for each of 4 clips
    names = sorted(p.name for p in (tmp_path / "dis").iterdir())
    assert names[:3] == [
        f"target_000000_0000{a}_0000{b}_int16_x10.npy" for a, b in ((18, 17), (19, 17), (19, 18))
    ]
    from src.data.flow import read_flow

    epe = np.mean(
        [endpoint_error(read_flow(tmp_path / "dis" / n), read_flow(target / "flows" / n)) for n in names]
    )
    assert epe < 1.5
    again = compute_flows(
        "clip_folder", target, out=tmp_path / "dis", role="target", workers=1, progress=False
    )
    assert again["computed"] == 0 and again["kept"] == 12  # existing files are kept


def test_synthetic_clips_are_seeded_cached_and_never_replace_foreign_folders(tmp_path):
    from src.data.datasets.synthetic_video import ensure_synthetic_video_dataset

    a = render_clip(np.random.default_rng([3, 1]), domain="target", height=32, width=64, num_frames=2)
    b = render_clip(np.random.default_rng([3, 1]), domain="target", height=32, width=64, num_frames=2)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    kw = dict(num_source=1, num_target=1, num_val=1, height=32, width=64)
    root = ensure_synthetic_video_dataset(tmp_path / "sv", **kw)
    stamp = (root / "manifest.json").stat().st_mtime_ns
    assert ensure_synthetic_video_dataset(tmp_path / "sv", **kw) == root
    assert (root / "manifest.json").stat().st_mtime_ns == stamp  # cached
    assert sorted(p.name for p in (root / "target" / "frames").iterdir()) == [
        f"target_000000_0000{n}.png" for n in (16, 17, 18, 19)
    ]
    assert not any((root / "target" / "labels").iterdir())  # the target is unlabelled
    assert len(list((root / "target" / "flows").iterdir())) == 5  # the flows of Δ = 1 and 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_synthetic_video_dataset(tmp_path / "mine", **kw)


def test_synthetic_clips_take_the_image_generators_parts_of_the_gap(tmp_path):
    """camera_gap / thing_gap / palette_gap reach the clips' style as the image generator's, the manifest
    records them, the files are the in-memory render, and a negative part is refused before anything is
    written."""
    import json

    from src.data.datasets.synthetic_video import (
        _clip_rng,
        ensure_synthetic_video_dataset,
        generate_synthetic_video_dataset,
    )

    def clip(**gaps):
        rng = np.random.default_rng([3, 1])
        return render_clip(rng, domain="target", height=32, width=64, num_frames=2, **gaps)

    plain, same_cam = clip(), clip(camera_gap=0.0)
    assert not np.array_equal(plain.frames[0], same_cam.frames[0])  # the camera moved
    assert np.array_equal(clip(camera_gap=1.0).frames[0], plain.frames[0])  # 1.0 = the gap: the default clip
    kw = dict(num_source=1, num_target=1, num_val=1, height=32, width=64, seed=4)
    with pytest.raises(ValueError, match="camera_gap must be >= 0"):
        generate_synthetic_video_dataset(tmp_path / "neg", **kw, camera_gap=-1.0)
    assert not (tmp_path / "neg").exists()
    root = ensure_synthetic_video_dataset(tmp_path / "c0", **kw, thing_gap=0.0, camera_gap=0.0)
    params = json.loads((root / "manifest.json").read_text())["params"]
    assert params == {**kw, "gap": 1.0, "thing_gap": 0.0, "camera_gap": 0.0, "max_interval": 2}
    expected = render_clip(
        _clip_rng(4, "val", 0), domain="target", height=32, width=64, num_frames=2, thing_gap=0.0,
        camera_gap=0.0,
    )  # fmt: skip
    frame = cv2.cvtColor(cv2.imread(str(root / "val/frames/val_000000_000019.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(frame, expected.frame(0))


def test_protocol_labels_are_drawn_in_the_cityscapes_colour_of_their_name() -> None:
    from src.data.classes import CITYSCAPES_CLASSES, SYNTHIA_SEQ12_CLASSES, palette_for

    pal19 = dict(zip(CITYSCAPES_CLASSES, palette_for(19)))
    pal12 = palette_for(12, SYNTHIA_SEQ12_CLASSES)
    assert pal12[3] == pal19["fence"] and pal12[4] == pal19["pole"] and pal12[11] == pal19["car"]
    assert palette_for(19, CITYSCAPES_CLASSES) == palette_for(19)
    odd = palette_for(2, ["road", "not-a-cityscapes-class"])
    assert odd[0] == pal19["road"] and odd[1] not in pal19.values()
