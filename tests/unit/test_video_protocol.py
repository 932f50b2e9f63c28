"""Issue 18, the published video protocols as published: the teacher switch with a frozen teacher of its own
model and checkpoint (a TPS checkpoint included), ADVENT's valid-pixel mean and align_corners upsampling, only
the flows a method reads, the references' source preprocessing, the forward-backward consistency mask and the
KITTI PNG flow reader."""

from __future__ import annotations

import logging
import math
import shutil

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from src.data.datasets.clip_folder import ClipFolderDataset
from src.data.datasets.synthetic_video import SyntheticClip, _Motion, render_clip
from src.data.flow import (
    flow_consistency,
    read_flow,
    read_flow_kitti_png,
    write_flow,
    write_flow_kitti_png,
)
from src.data.transforms import MEAN, STD
from src.data.video_datamodule import ClipTrainTransform, FlowOptions, target_keys
from src.models.temporal_aggregation import ClipPredictor, create_temporal_segmentor
from src.models.tps_checkpoint import CAFFE_MEAN_BGR, caffe_bgr_from_imagenet, is_tps_layout, tps_to_ours
from src.train import build_datamodule
from src.uda.video.module import build_module
from src.uda.video.teacher_switch import SwitchTeacher
from src.uda.video.tps import TemporalPseudoSupervision
from src.utils.config import warmup_without
from tests.conftest import TINY_VIDEO, compose_cfg


# ------------------------------------------------------------------------------------------------- TPS layout
def tps_layout_state(num_classes: int, blocks=(3, 4, 6, 3), seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the layout of TPS's ``ResNetMulti`` (tps/model/accel_deeplabv2.py,
    ``model.state_dict()`` as train_video_UDA.py saves it), built from the architecture alone: the 7x7 stem
    ``conv1``/``bn1``, Bottleneck blocks ``layerN.i.{conv1,bn1,conv2,bn2,conv3,bn3}`` with
    ``downsample.{0,1}`` on the first block of every layer, the ASPP classifiers ``layer5`` (on layer3) and
    ``layer6`` (on layer4) with four dilated convs each (``conv2d_list.{0..3}``), and the score fusion
    ``sf_layer``. Random weights."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name, cout, cin, k):
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2.0 / (cin * k * k))

    def bn(name, c):
        state[f"{name}.weight"] = 1.0 + 0.1 * torch.randn(c, generator=g)
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_var"] = 1.0 + 0.1 * torch.rand(c, generator=g)
        state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for i in range(n):
            p = f"layer{layer}.{i}"
            conv(f"{p}.conv1", planes, inplanes, 1)
            bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3)
            bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", planes * 4, planes, 1)
            bn(f"{p}.bn3", planes * 4)
            if i == 0:
                conv(f"{p}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    for name, cin in (("layer5", 1024), ("layer6", 2048)):
        for i in range(4):
            state[f"{name}.conv2d_list.{i}.weight"] = 0.01 * torch.randn(num_classes, cin, 3, 3, generator=g)
            state[f"{name}.conv2d_list.{i}.bias"] = 0.01 * torch.randn(num_classes, generator=g)
    sf = torch.zeros(num_classes, 2 * num_classes, 1, 1)
    sf[torch.arange(num_classes), torch.arange(num_classes)] = 1.0
    state["sf_layer.weight"] = sf + 0.01 * torch.randn(sf.shape, generator=g)
    return state


def _tps_model(num_classes: int, depth: int = 50):
    return create_temporal_segmentor(
        name=f"accel_deeplabv2_r{depth}",
        num_classes=num_classes,
        resnet_style="caffe",
        head_dilations=(6, 12, 18, 24),
        aux_head=True,
    )


def test_tps_checkpoint_keys_map_onto_the_caffe_style_two_frame_deeplab():
    state = tps_layout_state(5)
    assert is_tps_layout(state) and is_tps_layout({f"module.{k}": v for k, v in state.items()})
    mapped, unknown = tps_to_ours(state)
    assert unknown == []
    model = _tps_model(5)
    ours = model.state_dict()
    assert set(mapped) == set(ours)  # every TPS tensor has its place and every tensor of ours is filled
    assert all(tuple(mapped[k].shape) == tuple(ours[k].shape) for k in ours)
    model.load_state_dict(mapped, strict=True)
    assert torch.equal(model.head.aspp_modules[3].weight, state["layer6.conv2d_list.3.weight"])
    assert torch.equal(model.aux_head.aspp_modules[0].bias, state["layer5.conv2d_list.0.bias"])
    assert torch.equal(
        model.backbone.layer3[0].downsample[1].running_var, state["layer3.0.downsample.1.running_var"]
    )
    _, unknown = tps_to_ours({**state, "layer7.0.weight": torch.zeros(1)})  # UDASS's proda head: not TPS
    assert unknown == ["layer7.0.weight"]


def test_caffe_style_resnet_is_the_tps_deeplab_resnet():
    """Stride on the 1x1 conv, full dilations 2 / 4 from the first block, ceil-mode pool: TPS's 65x129 logits
    for 512x1024 (here 9x17 for 64x128: 32x64 -> ceil pool 17x33 -> stride-2 1x1 conv 9x17)."""
    model = _tps_model(3).eval()
    bb = model.backbone
    assert (
        bb.maxpool.ceil_mode and bb.layer2[0].conv1.stride == (2, 2) and bb.layer2[0].conv2.stride == (1, 1)
    )
    assert all(b.conv2.dilation == (2, 2) and b.conv2.padding == (2, 2) for b in bb.layer3)
    assert all(b.conv2.dilation == (4, 4) for b in bb.layer4)
    assert model.head.dilations == (6, 12, 18, 24)
    with torch.no_grad():
        out = model.forward_clip(
            torch.randn(1, 3, 64, 128), torch.randn(1, 3, 64, 128), torch.zeros(1, 2, 64, 128)
        )
    assert out.fused.shape == (1, 3, 9, 17) and out.aux.shape == (1, 3, 9, 17)
    with pytest.raises(ValueError, match="resnet_style"):
        create_temporal_segmentor(name="accel_daformer_mitb0", resnet_style="caffe")


def test_caffe_input_is_bgr_0_255_minus_the_caffe_mean():
    rgb = torch.tensor([10.0, 120.0, 250.0]).view(1, 3, 1, 1)
    x = (rgb - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    out = caffe_bgr_from_imagenet(x).flatten()
    expected = torch.tensor([250.0, 120.0, 10.0]) - torch.tensor(CAFFE_MEAN_BGR)
    assert torch.allclose(out, expected, atol=1e-3)


# --------------------------------------------------------------------------------------- the switch teacher
def _tiny_student(num_classes: int = 5):
    return create_temporal_segmentor(name="accel_daformer_mitb0", num_classes=num_classes, head_channels=16)


TPS_MODEL = {
    "_target_": "src.models.temporal_aggregation.create_temporal_segmentor",
    "name": "accel_deeplabv2_r50",
    "num_classes": 5,
    "resnet_style": "caffe",
    "head_dilations": [6, 12, 18, 24],
    "aux_head": True,
}


def test_switch_teacher_of_its_own_model_loads_a_tps_checkpoint_and_labels_on_caffe_input(tmp_path):
    """A ViT student, a frozen CNN teacher of its own config built from a TPS checkpoint; it labels (on the
    converted input) until switch_step, then the student; the classes must match."""
    torch.manual_seed(0)
    student = _tiny_student()
    path = tmp_path / "tps_viper2city_pretrained.pth"
    state = tps_layout_state(5)
    torch.save(state, path)
    teacher = SwitchTeacher(
        student=student,
        model=dict(TPS_MODEL),
        checkpoint=str(path),
        switch_step=1,
        input_norm="caffe_bgr",
    )
    assert teacher.own_model and teacher.model_name == "accel_deeplabv2_r50"
    assert not any(k.startswith("_student") for k in teacher.state_dict())
    teacher.update(student, 0)
    assert torch.equal(teacher.model.backbone.conv1.weight, state["conv1.weight"])
    x, xp, flow = torch.randn(1, 3, 64, 128), torch.randn(1, 3, 64, 128), torch.zeros(1, 2, 64, 128)
    out = teacher.clip_logits(x, xp, flow)
    teacher.model.eval()
    with torch.no_grad():
        ref = teacher.model.forward_clip(caffe_bgr_from_imagenet(x), caffe_bgr_from_imagenet(xp), flow)
    assert out.fused.shape == (1, 5, 9, 17) and torch.allclose(out.fused, ref.fused, atol=1e-4)
    # the frozen model labels in eval mode (udass.md §2.5c): its BatchNorm statistics stay the checkpoint's
    assert torch.equal(teacher.model.backbone.bn1.running_mean, state["bn1.running_mean"])
    teacher.update(student, 1)  # the student labels itself, on our inputs
    assert teacher.clip_logits(x, xp, flow).fused.shape == (1, 5, 16, 32)
    # wrong classes, no checkpoint, wrong input normalisation: one line each
    with pytest.raises(ValueError, match="predicts 7 classes, the student 5"):
        SwitchTeacher(student=student, model={**TPS_MODEL, "num_classes": 7}, checkpoint=str(path))
    with pytest.raises(ValueError, match="checkpoint is null"):
        SwitchTeacher(student=student, model=dict(TPS_MODEL))
    wrong = SwitchTeacher(student=student, model=dict(TPS_MODEL), checkpoint=str(path))
    with pytest.raises(ValueError, match="TPS checkpoint.*tps_accel_deeplabv2_r101"):
        wrong.update(student, 0)
    torch.save(tps_layout_state(7), tmp_path / "seven.pth")
    seven = SwitchTeacher(
        student=student, model=dict(TPS_MODEL), checkpoint=str(tmp_path / "seven.pth"), input_norm="caffe_bgr"
    )
    with pytest.raises(ValueError, match="predicts 7 classes, the student 5 .*data.num_classes"):
        seven.update(student, 0)


def test_switch_teacher_reads_the_student_or_the_teacher_of_a_library_checkpoint(tmp_path):
    student = _tiny_student()
    other = _tiny_student()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    state.update({f"teacher.model.{k}": v for k, v in other.state_dict().items()})
    torch.save({"state_dict": state}, tmp_path / "run.ckpt")
    for part, expect in (("student", student), ("teacher", other)):
        t = SwitchTeacher(
            student=_tiny_student(), checkpoint=str(tmp_path / "run.ckpt"), checkpoint_part=part
        )
        t.update(t._student[0], 0)
        assert torch.equal(t.model.sf_layer.weight, expect.sf_layer.weight)
    torch.save(
        {"state_dict": {f"student.{k}": v for k, v in student.state_dict().items()}}, tmp_path / "s.ckpt"
    )
    t = SwitchTeacher(student=student, checkpoint=str(tmp_path / "s.ckpt"), checkpoint_part="teacher")
    with pytest.raises(ValueError, match="holds no teacher.*checkpoint_part=student"):
        t.update(student, 0)


def test_the_teacher_model_group_composes_and_the_allow_list_accepts_it():
    from src.utils.safe_load import allow_list

    cfg = compose_cfg(
        "train",
        [
            "experiment=udass_viper",
            "paths.output_dir=/x",
            "uda/teacher/model=tps_accel_deeplabv2_r101",
            "uda.teacher.checkpoint=/t.pth",
        ],
    )
    t = cfg.uda.teacher
    assert t.input_norm == "caffe_bgr" and t.model.resnet_style == "caffe" and t.model.num_classes == 15
    assert cfg.uda.tps_start == 0 and cfg.uda.mix.quadmix_start == 0  # a pre-trained teacher: TPS from step 0
    assert t.model._target_ in allow_list().allowed("uda.teacher.model._target_")


# ----------------------------------------------------------------------- headline experiments: the schedule
@pytest.mark.parametrize("experiment, classes", [("udass_viper", 15), ("udass_synthia_seq", 12)])
def test_headline_experiments_name_the_switch_teacher_and_warm_up_without_one(experiment, classes, caplog):
    cfg = compose_cfg(
        "train",
        [
            f"experiment={experiment}",
            "paths.output_dir=/x",
            "model=accel_daformer_mitb0",
            "model.head_channels=16",
            "trainer.max_steps=1000",
        ],
    )
    assert cfg.uda.teacher._target_.endswith("SwitchTeacher") and cfg.uda.teacher.checkpoint is None
    assert cfg.data.source_crop is False and cfg.data.source_flip is False
    # udass.md §2.6.3: no photometric view on VIPER, TPS's own view on SYNTHIA-Seq
    want = None if experiment == "udass_viper" else "src.uda.video.tps_augment.TPSStrongAugment"
    assert (cfg.uda.pseudo.augment and cfg.uda.pseudo.augment._target_) == want
    with caplog.at_level(logging.INFO, logger="src.uda.video.module"):
        module = build_module(OmegaConf.to_container(cfg, resolve=True))
    assert module.tps_start == 100 and module.mix.quadmix_start == 100 and module.teacher.switch_step == 100
    lines = [r.getMessage() for r in caplog.records if "no pre-trained teacher" in r.getMessage()]
    assert len(lines) == 1 and "step 100" in lines[0] and "\n" not in lines[0]
    assert "frozen *initial* weights" not in lines[0]  # the student labels from the first TPS step
    assert module.target_flows_read(OmegaConf.to_container(cfg, resolve=True)) == (
        "flow",
        "flow_k",
        "flow_k_prev",
    )
    assert warmup_without("/t.pth", 0.1) == 0 and warmup_without(None, 0.1) == 0.1


# ---------------------------------------------------------------------------- valid-pixel mean, align_corners
def test_video_losses_average_over_the_valid_pixels(video_data_dir):
    """ADVENT's loss_calc: the CE of a label with ignored pixels is the mean over the labelled ones (the
    reference), not over all pixels (uda.loss_reduction=all_pixels, the mmseg image code)."""
    base = [
        f"paths.data_dir={video_data_dir}",
        "paths.output_dir=/x",
        *TINY_VIDEO,
        "model.head_channels=16",
        "model.pretrained=null",
        "experiment=udass_synthetic_video",
    ]
    module = build_module(
        OmegaConf.to_container(compose_cfg("train", base), resolve=True), load_pretrained=False
    )
    assert module.loss_reduction == "valid_pixels" and module.align_corners
    logits = torch.randn(2, 19, 8, 8)
    y = torch.randint(0, 19, (2, 32, 32))
    y[:, :16] = 255  # half the pixels ignored
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=True)
    assert torch.allclose(module.ce(logits, y), F.cross_entropy(up, y, ignore_index=255), atol=1e-6)
    old = build_module(
        OmegaConf.to_container(
            compose_cfg("train", [*base, "uda.loss_reduction=all_pixels", "uda.align_corners=false"]),
            resolve=True,
        ),
        load_pretrained=False,
    )
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(old.ce(logits, y), F.cross_entropy(up, y, ignore_index=255) / 2, atol=1e-6)
    # L_TPS: pixels outside the valid / consistency masks are ignored pixels of ŷ (out of the mean)
    pl = torch.randint(0, 19, (2, 8, 8))
    keep = torch.ones(2, 8, 8, dtype=torch.bool)
    keep[:, :, :4] = False
    tps = module.tps_loss(logits, pl, None, keep)
    assert torch.allclose(tps, F.cross_entropy(logits[..., 4:], pl[..., 4:]), atol=1e-6)
    with pytest.raises(ValueError, match="uda.loss_reduction"):
        build_module(
            OmegaConf.to_container(compose_cfg("train", [*base, "uda.loss_reduction=sum"]), resolve=True),
            load_pretrained=False,
        )


def test_evaluation_upsamples_once_with_align_corners():
    model = _tiny_student(3).eval()
    x, xp = torch.randn(1, 3, 32, 64), torch.randn(1, 3, 32, 64)
    z = ClipPredictor.stack(x, xp, torch.zeros(1, 2, 32, 64))
    with torch.no_grad():
        logits = model.forward_clip(x, xp, torch.zeros(1, 2, 32, 64)).fused
        direct = F.interpolate(logits, size=(64, 128), mode="bilinear", align_corners=True)
        assert torch.allclose(
            ClipPredictor(model, align_corners=True).predict_at(z, (64, 128)), direct, atol=1e-5
        )


# -------------------------------------------------------------------------------------- flows a method reads
def test_target_keys_only_the_flows_read():
    frames, flows = target_keys(1, ("flow", "flow_k", "flow_k_prev"))
    assert flows == {"flow": (0, 1), "flow_k": (0, 1), "flow_k_prev": (1, 2)} and frames["img_k_prev"] == 2
    assert target_keys(2, ("flow_k_fwd",))[1] == {"flow_k_fwd": (2, 0)}
    assert set(target_keys(1)[1]) == {"flow", "flow_k", "flow_k_prev", "flow_kk"}  # the contract's four
    with pytest.raises(ValueError, match="flow_xx"):
        target_keys(1, ("flow_xx",))


def test_the_flow_loader_asks_only_for_the_flows_the_method_reads(video_data_dir, tmp_path):
    """TPS's published target flows lack t -> t-2: uda=tps (and the ViT MMD) start without them; the CNN MMD's
    second target pair reads them, and its start-up names the missing file."""
    root = tmp_path / "synthetic_video"
    shutil.copytree(video_data_dir / "synthetic_video", root)
    for f in (root / "target" / "flows").glob("*_000019_000017_int16_x10.npy"):
        f.unlink()
    base = [
        f"paths.data_dir={tmp_path}",
        "paths.output_dir=/x",
        *TINY_VIDEO,
        "data.prepare=null",
        "model.head_channels=16",
    ]
    for exp in ("tps_synthetic_video", "udass_synthetic_video"):  # the ViT MMD: one target pair
        dm = build_datamodule(compose_cfg("train", [*base, f"experiment={exp}"]))
        dm.setup("fit")
        assert dm.split_needs("target", dm.target)[2] == ((0, 1), (1, 2))
        batch = dm.train_dataset()[0]["target"]
        assert {"flow", "flow_k", "flow_k_prev"} <= set(batch) and "flow_kk" not in batch
    dm = build_datamodule(compose_cfg("train", [*base, "experiment=source_only_synthetic_video"]))
    dm.setup("fit")
    assert dm.split_needs("target", dm.target)[2] == ()  # no teacher: no target flow at all
    cnn = compose_cfg(
        "train", [*base, "experiment=udass_synthetic_video", "uda.mmd.target_weights=[0.5,0.5]"]
    )
    with pytest.raises(FileNotFoundError, match=r"target_000000_000019_000017_int16_x10\.npy"):
        build_datamodule(cnn).setup("fit")
    # the consistency mask reads the forward flow t-1 -> t: DIS on the fly by default, never a file
    cons = compose_cfg("train", [*base, "experiment=tps_synthetic_video", "uda.pseudo.consistency=true"])
    dm = build_datamodule(cons)
    dm.setup("fit")
    assert (1, 0) not in dm.split_needs("target", dm.target)[2]
    t = dm.train_dataset()[0]["target"]
    assert t["flow_k_fwd"].shape == t["flow_k"].shape and t["flow_k_fwd"].abs().amax() > 0.1


# ------------------------------------------------------------------------------------- source preprocessing
def test_whole_source_frame_without_crop_or_flip(tmp_path):
    """data.source_crop=false: the whole frame resized to the crop size (labels nearest, flows scaled);
    data.source_flip=false: never mirrored."""
    root = tmp_path / "clips"
    h, w = 60, 200
    grad = np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1))
    frame = np.stack([grad, grad, grad], -1).astype(np.uint8)
    for k in (1, 2):
        (root / "frames").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "frames" / f"seq_00000{k}.png"), frame)
    label = np.zeros((h, w), np.uint8)
    label[:, w // 2 :] = 1
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "labels" / "seq_000002.png"), label)
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0] = 4.0
    write_flow(root / "flows" / "seq_000002_000001_int16_x10.npy", flow)
    clip = ClipFolderDataset(root).load_clip(0, (0, 1), (0,), ((0, 1),))
    tf = ClipTrainTransform(
        crop_size=(30, 50),
        scale=None,
        cat_max_ratio=1.0,
        flow=FlowOptions(),
        uint8=False,
        crop=False,
        flip=False,
    )
    tf.base.flip_p = 1.0
    for seed in range(3):
        out = tf(
            clip,
            np.random.default_rng(seed),
            frame_keys={"img": 0},
            flow_keys={"flow": (0, 1)},
            label_keys={"gt": 0},
            with_valid=True,
        )
        assert out["img"].shape == (3, 30, 50) and out["gt"].shape == (30, 50)
        assert out["gt"][:, :25].eq(0).all() and out["gt"][:, 25:].eq(1).all()  # whole frame, not mirrored
        assert torch.allclose(out["flow"][0], torch.full((30, 50), 1.0)) and out["valid"].all()
    cropped = ClipTrainTransform(
        crop_size=(30, 50), scale=None, cat_max_ratio=1.0, flow=FlowOptions(), uint8=False
    )(clip, np.random.default_rng(0), frame_keys={"img": 0}, flow_keys={"flow": (0, 1)})
    assert torch.allclose(cropped["flow"][0].abs(), torch.full((30, 50), 4.0))  # a window, flow unscaled


# ------------------------------------------------------------------------------- forward-backward consistency
def _occlusion_clip(
    h: int = 24, w: int = 48, x0: int = 10, size: int = 12, speed: float = 4.0
) -> SyntheticClip:
    """Two frames of a static background and a box moving right by ``speed`` px a frame (layer 1); no camera
    motion. In frame t the background just left of the box was hidden behind it in frame t-1."""
    owners = []
    for j in range(2):
        own = np.zeros((h, w), np.int64)
        left = int(x0 + j * speed)
        own[6 : 6 + size, left : left + size] = 1
        owners.append(own)
    blank = [np.zeros((h, w, 3), np.uint8)] * 2
    motion = _Motion(ss=1, margin=0, cx=w / 2, cy=h / 2, zoom=0.0, ex=0.0, ey=0.0)
    return SyntheticClip(
        frames=blank,
        labels=[np.zeros((h, w), np.uint8)] * 2,
        owners=owners,
        motion=motion,
        velocities=np.array([[0.0, 0.0], [speed, 0.0]]),
    )


def test_consistency_mask_flags_the_pixels_occluded_in_the_earlier_frame():
    clip = _occlusion_clip()
    bw, visible = clip.flow(0, 1)  # t -> t-1 on t's grid, exact, and where its point is visible in t-1
    fw, _ = clip.flow(1, 0)  # t-1 -> t on t-1's grid
    assert (~visible).sum() == 12 * 4  # the strip the box uncovered
    to_t = lambda f: torch.from_numpy(f).permute(2, 0, 1)[None]  # noqa: E731
    ok = flow_consistency(to_t(bw), to_t(fw))[0].numpy()
    assert np.array_equal(ok, visible)  # exactly the occluded pixels fail
    # and it zeroes them in L_TPS: the student is only trained where the warped label is meaningful
    tps = TemporalPseudoSupervision(consistency=True)
    logits_k = torch.zeros(1, 2, 24, 48)
    pl = tps.labels(logits_k, to_t(bw), torch.tensor([False]), (24, 48), flow_k_fwd=to_t(fw))
    assert torch.equal(pl.consistent[0], torch.from_numpy(visible))
    wrong = torch.zeros(1, 2, 24, 48)
    wrong[:, 1] = 10.0  # predicts class 1 everywhere; ŷ is class 0: only kept pixels cost
    ce = F.cross_entropy(wrong, torch.zeros(1, 24, 48, dtype=torch.long), reduction="none")[0]
    assert torch.allclose(tps.loss(wrong, pl, reduction="valid_pixels"), ce[torch.from_numpy(visible)].mean())
    with pytest.raises(ValueError, match="flow_k_fwd"):
        tps.labels(logits_k, to_t(bw), torch.tensor([False]), (24, 48))


def test_consistency_mask_on_rendered_synthetic_clips_against_their_exact_visibility():
    """Rendered target clips (ego zoom and drift, independently moving objects) with their analytic flows:
    every point warped from outside the other frame is rejected; of the rejected pixels almost all are truly
    not visible there (precision; measured 0.88 for t -> t-1, 0.97 for t-1 -> t); the occlusions the flow test
    can see (all four bilinear neighbours of the landing point on another layer) are mostly caught (measured
    0.84 / 0.92). One-pixel boundary occlusions (a nearest-pixel visibility) are mostly kept: sub-pixel motion
    passes the test's β."""
    to_t = lambda f: torch.from_numpy(f).permute(2, 0, 1)[None]  # noqa: E731
    clips = [
        render_clip(np.random.default_rng([11, i]), domain="target", height=64, width=128, num_frames=2)
        for i in range(6)
    ]
    for a, b, min_precision, min_recall in ((0, 1, 0.85, 0.8), (1, 0, 0.95, 0.85)):
        rejected = rejected_bad = out = out_rejected = deep = deep_rejected = 0
        for c in clips:
            bw, visible = c.flow(a, b)
            fw, _ = c.flow(b, a)
            ok = flow_consistency(to_t(bw), to_t(fw))[0].numpy()
            h, w = visible.shape
            ys, xs = np.mgrid[0:h, 0:w]
            px, py = xs + bw[..., 0], ys + bw[..., 1]
            inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
            own, other = c.owners[c.num_frames - 1 - a], c.owners[c.num_frames - 1 - b]
            x0 = np.clip(np.floor(px), 0, w - 1).astype(int)
            y0 = np.clip(np.floor(py), 0, h - 1).astype(int)
            x1, y1 = np.clip(x0 + 1, 0, w - 1), np.clip(y0 + 1, 0, h - 1)
            occluded = inside & np.all([other[yy, xx] != own for yy in (y0, y1) for xx in (x0, x1)], axis=0)
            rejected += (~ok).sum()
            rejected_bad += (~ok & ~visible).sum()
            out += (~inside).sum()
            out_rejected += (~inside & ~ok).sum()
            deep += occluded.sum()
            deep_rejected += (occluded & ~ok).sum()
        assert out_rejected == out and (out > 0) == (a == 1)  # zooming in: only t-1 -> t leaves the frame
        assert rejected > 0 and rejected_bad / rejected >= min_precision
        assert deep > 0 and deep_rejected / deep >= min_recall


# --------------------------------------------------------------------------------------------- KITTI flows
def test_kitti_png_flow_reader(tmp_path):
    """UnifiedVideoDA's FlowFormer flows: 16-bit PNG, u = (R - 2^15)/64, v = (G - 2^15)/64, B = valid."""
    h, w = 4, 6
    u = np.round(np.linspace(-3.5, 7.25, h * w).reshape(h, w) * 64) / 64  # exact in 1/64 px
    v = np.round(np.linspace(2.0, -1.5, h * w).reshape(h, w) * 64) / 64
    valid = np.ones((h, w), np.uint16)
    valid[0, 0] = 0
    rgb = np.stack([u * 64 + 2**15, v * 64 + 2**15, valid], -1).astype(np.uint16)
    path = tmp_path / "a_000019_000018.png"
    cv2.imwrite(str(path), rgb[..., ::-1].copy())  # written independently of our writer: cv2 stores BGR
    flow, ok = read_flow_kitti_png(path)
    assert ok.sum() == h * w - 1 and not ok[0, 0]
    assert (
        np.allclose(flow[..., 0][ok], u[ok])
        and np.allclose(flow[..., 1][ok], v[ok])
        and flow[0, 0].tolist() == [0, 0]
    )
    assert np.array_equal(read_flow(path), flow)  # by extension
    write_flow_kitti_png(tmp_path / "b.png", flow, ok)
    assert np.array_equal(read_flow(tmp_path / "b.png", format="kitti_png"), flow)
    # round trip of any flow: 1/64 px precision (rounded: error <= 1/128 px), invalid pixels read as zero
    rng = np.random.default_rng(0)
    any_flow = rng.uniform(-300, 300, (h, w, 2)).astype(np.float32)
    write_flow_kitti_png(tmp_path / "d.png", any_flow, ok)
    back, ok_back = read_flow_kitti_png(tmp_path / "d.png")
    assert np.array_equal(ok_back, ok) and np.all(back[~ok] == 0)
    assert np.abs(back[ok] - any_flow[ok]).max() <= 1 / 128 + 1e-6
    assert np.abs(back[ok] - any_flow[ok]).max() > 0  # quantised, not lossless: the precision is 1/64 px
    (tmp_path / "c.flo").write_bytes(b"PIEH")  # Middlebury .flo: not a format of ours
    with pytest.raises(ValueError, match="data.flow.format"):
        read_flow(tmp_path / "c.flo")
    # a clip folder with data.flow.format=kitti_png reads <published name>.png
    root = tmp_path / "clips"
    (root / "frames").mkdir(parents=True)
    for k in (18, 19):
        cv2.imwrite(str(root / "frames" / f"a_0000{k}.png"), np.zeros((h, w, 3), np.uint8))
    write_flow_kitti_png(root / "flows" / "a_000019_000018.png", flow)
    ds = ClipFolderDataset(root, labels=False)
    ds.flow_format = "kitti_png"
    ds.verify((0, 1), (), ((0, 1),))
    assert np.allclose(ds.load_clip(0, (0, 1), (), ((0, 1),)).flows[(0, 1)], flow)
    cfg = compose_cfg(
        "train",
        [
            "data=clip_folder",
            "data.flow.format=kitti_png",
            "paths.output_dir=/x",
            f"data.source_dir={root}",
            f"data.target_dir={root}",
            f"data.val_dir={root}",
        ],
    )
    assert FlowOptions(**OmegaConf.to_container(cfg.data.flow)).format == "kitti_png"
    with pytest.raises(ValueError, match="data.flow.format"):
        FlowOptions(format="flo")
