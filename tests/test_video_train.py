"""Video UDA end to end on tiny synthetic clips: UDASS video trains and writes results.json (last and best),
a resumed run equals an uninterrupted one (QuadMix clip memory included), a video checkpoint evaluates
with src.eval, and the other video experiments (TPS, two-frame source only, image MIC on clips) train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from src.train import train
from src.uda.video.module import VideoUDAModule, load_module
from tests.conftest import FAST_TRAINER, TINY_VIDEO, compose_cfg
from tests.test_train import _assert_same

# QuadMix from the second step on; both MMD target pairs (t, t-1) and (t, t-Δ-1) (udass.md §2.6.5)
UDASS_FAST = ["uda.mix.quadmix_start=1", "uda.mmd.target_weights=[0.5,0.5]", "uda.tps_start=0"]


@pytest.fixture
def video_cfg(video_data_dir, tmp_path):
    def make(*overrides: str):
        base = [f"paths.data_dir={video_data_dir}", f"paths.output_dir={tmp_path / 'run'}"]
        return compose_cfg("train", base + TINY_VIDEO + FAST_TRAINER + list(overrides))

    return make


def _metrics_header(run_dir: Path) -> set[str]:
    return set(Path(run_dir, "csv", "metrics.csv").read_text().splitlines()[0].strip().split(","))


def test_udass_video_trains_and_reports_last_and_best(video_cfg):
    cfg = video_cfg("experiment=udass_synthetic_video", *UDASS_FAST, "trainer.max_steps=2",
                    "trainer.val_check_interval=2")  # fmt: skip
    results = train(cfg)
    out = json.loads(Path(cfg.paths.output_dir, "results.json").read_text())
    assert out == results and out["method"] == "udass_video" and out["model"] == "accel_daformer_mitb0"
    assert out["steps"] == 2 and len(out["per_class"]) == 19 and 0.0 <= out["mIoU"] <= 100.0
    assert out["best_step"] == 2 and out["best_selected_by"] == "mIoU19"
    assert out["best_mIoU"] == out["subsets"]["19"] and out["best_mIoU_all"] == out["mIoU"]
    assert "teacher_mIoU" in out
    losses = {"train/loss_src", "train/loss_tps", "train/loss_mmd", "train/loss_ss", "train/loss_st"}
    assert losses <= _metrics_header(cfg.paths.output_dir)


@pytest.mark.slow
def test_udass_video_resume_matches_uninterrupted_run(video_cfg, tmp_path, video_data_dir):
    """Stop-and-resume from the step-2 checkpoint of a 4-step run reproduces the run bit for bit (weights, EMA
    teacher, optimizer, the video QuadMix clip memory), and the best-checkpoint record survives the resume."""
    common = ["experiment=udass_synthetic_video", *UDASS_FAST, "trainer.max_steps=4",
              "trainer.val_check_interval=2"]  # fmt: skip
    full = train(video_cfg(*common, f"paths.output_dir={tmp_path / 'full'}"))
    mid = tmp_path / "full" / "checkpoints" / "step000002.ckpt"
    assert mid.is_file()
    resumed = train(video_cfg(*common, f"paths.output_dir={tmp_path / 'resumed'}", f"ckpt_path={mid}"))
    a = load_module(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = load_module(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert isinstance(a, VideoUDAModule) and isinstance(b, VideoUDAModule)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and "mix._extra_state" in sa and sa["mix._extra_state"]["memory"]
    for k in sa:
        _assert_same(sa[k], sb[k], k)
    c = load_module(mid).state_dict()
    assert any(not torch.equal(sb[k], c[k]) for k in sb if k.startswith("student."))
    assert full["mIoU"] == resumed["mIoU"]
    assert (full["best_step"], full["best_mIoU"]) == (resumed["best_step"], resumed["best_mIoU"])

    # the checkpoint evaluates with src.eval on the two-frame protocol, as at the end of training
    from src.eval import evaluate

    ckpt = tmp_path / "full" / "checkpoints" / "last.ckpt"
    ecfg = compose_cfg("eval", [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}",
                                "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"])  # fmt: skip
    assert evaluate(ecfg)["mIoU"] == pytest.approx(full["mIoU"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment, losses",
    [
        ("tps_synthetic_video uda.tps_start=0", {"train/loss_src", "train/loss_tps"}),
        ("source_only_synthetic_video", {"train/loss_src"}),
        ("mic_synthetic_video", {"train/loss_src", "train/loss_mix", "train/loss_mask", "train/loss_fd"}),
        # the reference's teacher switch: the frozen initial model at step 0, the student itself at step 1
        (
            "udass_synthetic_video uda/teacher=switch uda.teacher.switch_step=1",
            {"train/loss_tps", "train/loss_ss"},
        ),  # fmt: skip
    ],
)
def test_other_video_experiments_train(video_cfg, experiment, losses):
    experiment, *extra = experiment.split()
    extra += UDASS_FAST if experiment.startswith("udass") else []
    cfg = video_cfg(f"experiment={experiment}", *extra, "trainer.max_steps=2", "trainer.val_check_interval=2")
    out = train(cfg)
    assert out["steps"] == 2 and 0.0 <= out["mIoU"] <= 100.0 and out["best_step"] == 2
    assert losses <= _metrics_header(cfg.paths.output_dir)


def test_tps_start_delays_the_target_terms(video_cfg):
    """uda.tps_start: before it the step is the source-only step (no L_TPS logged), the run still finishes."""
    cfg = video_cfg(
        "experiment=tps_synthetic_video",
        "uda.tps_start=5",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
    )
    out = train(cfg)
    assert out["steps"] == 2
    header = _metrics_header(cfg.paths.output_dir)
    assert "train/loss_src" in header and "train/loss_tps" not in header


def test_cnn_student_trains_with_aux_terms_histogram_matching_and_rescale(video_cfg, monkeypatch):
    """The reference CNN recipe: 0.1·aux on L_src and L_TPS (udass.md §2.6.6), source frames histogram-matched
    to the target frame (§2.6.1), TPS's rescaled student pair (video_uda.md §3.3)."""
    from src.uda.video import module as video_module
    from src.uda.video import tps as tps_module

    calls = {"aux": 0, "match": 0}
    with_aux = VideoUDAModule.with_aux

    def spy_aux(self, main, out, y, *args):
        calls["aux"] += out.aux is not None and self.aux_weight == 0.1
        return with_aux(self, main, out, y, *args)

    match = tps_module.match_histograms

    def spy_match(x, ref):
        calls["match"] += 1
        return match(x, ref)

    monkeypatch.setattr(VideoUDAModule, "with_aux", spy_aux)
    monkeypatch.setattr(video_module, "match_histograms", spy_match)
    cfg = video_cfg("experiment=tps_synthetic_video", "uda.tps_start=0", "model=accel_deeplabv2_r101",
                    "model.name=accel_deeplabv2_r50", "model.head_channels=null",
                    "uda.source_histogram_match=true", "uda.pseudo.rescale=[0.8,1.2]", "trainer.max_steps=2",
                    "trainer.val_check_interval=2")  # fmt: skip
    out = train(cfg)
    assert out["steps"] == 2 and 0.0 <= out["mIoU"] <= 100.0
    assert calls["aux"] == 4 and calls["match"] == 4  # source + TPS per step; cf and kf per step
    assert {"train/loss_src", "train/loss_tps"} <= _metrics_header(cfg.paths.output_dir)


def test_mic_and_feature_distance_compose_with_udass_video(video_cfg):
    """uda/mask=mic and uda/fd=imnet on the video module (udass_mic_synthetic_video): L_fd on the source clip,
    MIC's masked consistency on the current target pair with one augmentation and one mask for both frames,
    its forward with the BN running statistics frozen (uda.mask.update_bn_stats=false; MIC's default, true,
    runs in test_other_video_experiments_train)."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from src.uda.video.module import build_module

    cfg = video_cfg("experiment=udass_mic_synthetic_video", *UDASS_FAST, "trainer.max_steps=2",
                    "trainer.val_check_interval=2", "uda.mask.update_bn_stats=false")  # fmt: skip
    out = train(cfg)
    assert out["steps"] == 2 and out["method"] == "udass_mic_video" and 0.0 <= out["mIoU"] <= 100.0
    losses = {"train/loss_src", "train/loss_fd", "train/loss_tps", "train/loss_mask", "train/loss_ss"}
    assert losses <= _metrics_header(cfg.paths.output_dir)

    module = build_module(OmegaConf.to_container(cfg, resolve=True), load_pretrained=False)
    g = torch.Generator().manual_seed(0)
    x, x_prev = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    pl = SimpleNamespace(y_full=torch.zeros(2, 32, 32, dtype=torch.long), p_full=torch.ones(2, 32, 32))
    state = g.get_state()
    x_m, xp_m = module.masked_pair(x, x_prev, pl, g)
    assert torch.equal(x_m == 0, xp_m == 0) and 0.5 < float((x_m == 0).float().mean()) < 0.9  # ratio 0.7
    g.set_state(state)
    same_t, same_prev = module.masked_pair(x, x, pl, g)  # one frame twice: one augmentation and one mask
    assert torch.equal(same_t, same_prev) and torch.equal(same_t, x_m)


def test_video_module_refuses_omuda_fdm_target(video_cfg):
    from omegaconf import OmegaConf

    from src.uda.video.module import build_module

    cfg = video_cfg("experiment=udass_mic_synthetic_video", "uda/fd=fdm")
    with pytest.raises(ValueError, match="uda/fd=imnet"):
        build_module(OmegaConf.to_container(cfg, resolve=True), load_pretrained=False)


# ------------------------------------------------------------------- the reference schedule (issue 18)
def _train_source_only(video_cfg, out: Path, *model: str) -> Path:
    """A 2-step two-frame source-only run into ``out``: the frozen teacher of the reference schedule."""
    cfg = video_cfg("experiment=source_only_synthetic_video", *model, f"paths.output_dir={out}",
                    "trainer.max_steps=2", "trainer.val_check_interval=2")  # fmt: skip
    train(cfg)
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


def _state(ckpt: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def test_reference_schedule_on_the_synthetic_clips_teacher_from_a_source_only_run(video_cfg, tmp_path):
    """The benchmark command: a source-only video run, then TPS with its last.ckpt as the frozen switch
    teacher; the checkpoint alone moves TPS to step 0 (tps_synthetic_video waits 250 steps without one)."""
    ckpt = _train_source_only(video_cfg, tmp_path / "source_only")
    overrides = ["experiment=tps_synthetic_video", "uda/teacher=switch", "uda.teacher.switch_step=0.1",
                 f"uda.teacher.checkpoint={ckpt}", "trainer.max_steps=2", "trainer.val_check_interval=2",
                 f"paths.output_dir={tmp_path / 'tps'}"]  # fmt: skip
    cfg = video_cfg(*overrides)
    assert cfg.uda.tps_start == 0 and video_cfg("experiment=tps_synthetic_video").uda.tps_start == 250
    out = train(cfg)
    assert out["steps"] == 2 and 0.0 <= out["mIoU"] <= 100.0
    assert {"train/loss_src", "train/loss_tps"} <= _metrics_header(tmp_path / "tps")
    # the frozen model of the TPS run is the source-only run's student, unchanged by training
    frozen = _state(tmp_path / "tps" / "checkpoints" / "last.ckpt", "teacher.model.")
    source = _state(ckpt, "student.")
    assert frozen.keys() == source.keys()
    assert all(torch.equal(frozen[k], source[k]) for k in source)


def test_vit_student_trains_with_a_cnn_switch_teacher(video_cfg, tmp_path):
    """The reference's pairing: a ViT (MiT-B0) student labelled by a frozen CNN (two-frame DeepLabV2, a tiny
    ResNet-50 here) of its own model config and checkpoint; UDASS video (TPS, QuadMix, both MMD pairs) from
    step 0, 2 steps."""
    cnn = ["model=accel_deeplabv2_r101", "model.name=accel_deeplabv2_r50", "model.head_channels=null"]
    ckpt = _train_source_only(video_cfg, tmp_path / "cnn", *cnn)
    cfg = video_cfg("experiment=udass_synthetic_video", *UDASS_FAST, "uda/teacher=switch",
                    "uda/teacher/model=accel_deeplabv2_r101", "uda.teacher.model.name=accel_deeplabv2_r50",
                    f"uda.teacher.checkpoint={ckpt}", "uda.teacher.switch_step=1", "trainer.max_steps=2",
                    "trainer.val_check_interval=2", f"paths.output_dir={tmp_path / 'vit'}")  # fmt: skip
    out = train(cfg)
    assert out["steps"] == 2 and out["model"] == "accel_daformer_mitb0" and 0.0 <= out["mIoU"] <= 100.0
    assert {"train/loss_tps", "train/loss_ss", "train/loss_st", "train/loss_mmd"} <= _metrics_header(
        tmp_path / "vit"
    )
    module = load_module(tmp_path / "vit" / "checkpoints" / "last.ckpt")
    assert type(module.teacher.model.backbone).__name__ == "ResNetBackbone"  # the CNN, not a copy of the ViT
    assert type(module.student.backbone).__name__ != "ResNetBackbone"
    frozen = _state(tmp_path / "vit" / "checkpoints" / "last.ckpt", "teacher.model.")
    source = _state(ckpt, "student.")
    assert frozen.keys() == source.keys() and all(torch.equal(frozen[k], source[k]) for k in source)
    # a teacher config of another model than the checkpoint's: one line naming the fix
    bad = video_cfg("experiment=tps_synthetic_video", "uda/teacher=switch",
                    "uda/teacher/model=accel_daformer_mitb0", f"uda.teacher.checkpoint={ckpt}",
                    "trainer.max_steps=1", "trainer.val_check_interval=1",
                    f"paths.output_dir={tmp_path / 'bad'}")  # fmt: skip
    with pytest.raises(ValueError, match=r"uda\.teacher\.model\.name=accel_deeplabv2_r50"):
        train(bad)


def test_cnn_student_with_aux_head_and_a_switch_teacher_without_one(video_cfg, tmp_path, monkeypatch):
    """A frozen teacher without an aux classifier (a two-frame MiT) labelling a CNN student with one: the
    student's 0.1·CE(aux) TPS term learns the teacher's main labels instead of vanishing until the switch."""
    ckpt = _train_source_only(video_cfg, tmp_path / "vit")
    calls: list[tuple[int, ...]] = []
    real = VideoUDAModule.tps_loss

    def counted(self, logits, labels, *args, **kwargs):
        calls.append(tuple(logits.shape))
        return real(self, logits, labels, *args, **kwargs)

    monkeypatch.setattr(VideoUDAModule, "tps_loss", counted)
    cnn = ["model=accel_deeplabv2_r101", "model.name=accel_deeplabv2_r50", "model.head_channels=null"]
    cfg = video_cfg("experiment=tps_synthetic_video", *cnn, "uda/teacher=switch",
                    "uda/teacher/model=accel_daformer_mitb0", "uda.teacher.model.head_channels=16",
                    f"uda.teacher.checkpoint={ckpt}", "uda.teacher.switch_step=5", "trainer.max_steps=1",
                    "trainer.val_check_interval=1", f"paths.output_dir={tmp_path / 'cnn'}")  # fmt: skip
    assert cfg.model.aux_head and cfg.uda.tps_start == 0
    train(cfg)
    assert len(calls) == 2  # L_TPS on the fused logits and on the aux logits, at the first step


def test_a_video_checkpoint_from_before_align_corners_is_evaluated_as_trained(video_cfg, tmp_path):
    ckpt = _train_source_only(video_cfg, tmp_path / "run")
    assert load_module(ckpt).align_corners is True  # today's default, stored in the config
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    del state["hyper_parameters"]["cfg"]["uda"]["align_corners"]  # as written before the setting existed
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    assert load_module(old).align_corners is False
