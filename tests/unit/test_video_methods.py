"""Video methods (src/uda/video/): TPS pseudo-labels, video QuadMix, prototype MMD, teacher switch, best."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from src.models.temporal_aggregation import TemporalSegmentor
from src.uda.augment import StrongAugment
from src.uda.mixing.rare_class_paste import RareClassPaster
from src.uda.video.best_checkpoint import BestCheckpoint
from src.uda.video.prototype_mmd import PrototypeMMD, class_prototypes, multi_kernel_mmd
from src.uda.video.teacher_switch import SwitchTeacher
from src.uda.video.tps import TemporalPseudoSupervision
from src.uda.video.video_quadmix import VIDEO_MEMORY_KEYS, Clip, VideoQuadMix


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _flow(b: int, h: int, w: int, u: float, v: float = 0.0) -> torch.Tensor:
    f = torch.zeros(b, 2, h, w)
    f[:, 0], f[:, 1] = u, v
    return f


# ---------------------------------------------------------------------------------------------- TPS
def _band_logits(h: int = 8, w: int = 16, cols=(6, 7)) -> torch.Tensor:
    """3-class logits: class 1 in a column band, class 0 elsewhere (class 2 never)."""
    logits = torch.zeros(1, 3, h, w)
    logits[:, 0] = 2.0
    logits[:, 1, :, list(cols)] = 5.0
    return logits


def test_tps_pseudo_labels_follow_a_hand_made_shift():
    """flow d→b = (+2, 0) px: ŷ(p) = P(p + 2) — the band at columns 6-7 of frame b lands on 4-5 of frame d; at
    the input resolution (2x) the flow is scaled to 4 px; the last columns are border-clamped."""
    tps = TemporalPseudoSupervision()
    logits = _band_logits()
    pl = tps.labels(logits, _flow(1, 16, 32, 4.0), torch.tensor([False]), (16, 32))
    expected = torch.zeros(1, 8, 16, dtype=torch.long)
    expected[..., 4:6] = 1
    assert torch.equal(pl.y, expected)
    # input resolution: the warped map is the unwarped (key-frame) map moved by 4 px, border-clamped
    assert pl.y_full.shape == (1, 16, 32) and pl.y_key.shape == (1, 16, 32)
    assert torch.equal(pl.y_full[..., :28], pl.y_key[..., 4:])
    assert torch.equal(pl.y_full[..., 28:], pl.y_key[..., -1:].expand(1, 16, 4))
    assert (pl.y_key == 1).any() and not torch.equal(pl.y_full, pl.y_key)
    assert 0.0 < float(pl.p_full.min()) and float(pl.p_full.max()) <= 1.0
    # conf_c: the softmax maximum, or the raw-logit maximum with the reference quirk
    quirk = TemporalPseudoSupervision(key_confidence="logit").labels(
        logits, _flow(1, 16, 32, 4.0), torch.tensor([False]), (16, 32)
    )
    assert float(quirk.p_key.max()) == pytest.approx(5.0, abs=1e-4) and float(pl.p_key.max()) < 1.0


def test_tps_weak_view_mirrors_frames_and_flow():
    x_k, x_kp = torch.randn(2, 3, 4, 6), torch.randn(2, 3, 4, 6)
    flow = torch.randn(2, 2, 4, 6)
    xk, xkp, f, flipped = TemporalPseudoSupervision(flip_p=1.0).weak_view(x_k, x_kp, flow, _gen())
    assert flipped.all() and torch.equal(xk, x_k.flip(-1)) and torch.equal(xkp, x_kp.flip(-1))
    assert torch.equal(f[:, 0], -flow[:, 0].flip(-1)) and torch.equal(f[:, 1], flow[:, 1].flip(-1))
    _, _, fq, _ = TemporalPseudoSupervision(flip_p=1.0, flip_quirk=True).weak_view(x_k, x_kp, flow, _gen())
    assert torch.equal(fq[:, 0], flow[:, 0].flip(-1))  # TPS issue #9: u not negated
    xk0, _, f0, flipped0 = TemporalPseudoSupervision(flip_p=0.0).weak_view(x_k, x_kp, flow, _gen())
    assert not flipped0.any() and torch.equal(xk0, x_k) and torch.equal(f0, flow)


def test_tps_mirrored_weak_view_gives_the_same_labels_unless_the_quirk():
    """A pointwise teacher (logits = the frame): the mirrored weak view must give the pseudo-labels of the
    un-mirrored one; the reference's flip quirk does not (non-zero flow)."""
    torch.manual_seed(0)
    x_k = torch.randn(1, 3, 8, 16)
    flow_k = _flow(1, 8, 16, 3.0, 1.0)
    out = {}
    for name, kw in {"plain": {"flip_p": 0.0}, "flip": {"flip_p": 1.0},
                     "quirk": {"flip_p": 1.0, "flip_quirk": True}}.items():  # fmt: skip
        tps = TemporalPseudoSupervision(**kw)
        xk, _, _, flipped = tps.weak_view(x_k, x_k, torch.zeros(1, 2, 8, 16), _gen())
        out[name] = tps.labels(xk, flow_k, flipped, (8, 16))
    assert torch.equal(out["flip"].y, out["plain"].y) and torch.equal(out["flip"].y_key, out["plain"].y_key)
    assert torch.allclose(out["flip"].p_full, out["plain"].p_full)
    assert not torch.equal(out["quirk"].y, out["plain"].y)


def test_tps_strong_view_augments_both_frames_identically():
    aug = StrongAugment(color_jitter_p=0.0, blur_p=0.0)  # always jitter and blur
    tps = TemporalPseudoSupervision(augment=aug)
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    a1, b1 = tps.strong_view(a, b, _gen(3))
    b2, a2 = tps.strong_view(b, a, _gen(3))  # the frames swapped: the same transformation per position
    assert torch.allclose(a1, a2, atol=1e-5) and torch.allclose(b1, b2, atol=1e-5)
    assert not torch.allclose(a1, a, atol=1e-3)
    same1, same2 = tps.strong_view(a, a.clone(), _gen(5))
    assert torch.equal(same1, same2)
    # no augmentation: unchanged; the ToPILImage wrap-around emulation lands in [0, 1]
    assert torch.equal(TemporalPseudoSupervision().strong_view(a, b, _gen())[0], a)
    w, _ = TemporalPseudoSupervision(pil_wraparound=True).strong_view(a, b, _gen())
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0 and torch.equal(w * 255, (w * 255).round())


def test_tps_loss_uses_the_low_resolution_hard_labels_and_the_valid_mask():
    tps = TemporalPseudoSupervision()
    pl = tps.labels(_band_logits(), _flow(1, 16, 32, 0.0), torch.tensor([False]), (16, 32))
    perfect = 20.0 * nn.functional.one_hot(pl.y, 3).permute(0, 3, 1, 2).float()
    assert float(tps.loss(perfect, pl)) < 1e-6
    wrong = perfect.roll(1, dims=1)
    assert float(tps.loss(wrong, pl)) > 1.0
    assert float(tps.loss(wrong, pl, valid=torch.zeros(1, 16, 32))) == 0.0


def test_tps_threshold_weighs_unconfident_labels_zero_in_the_valid_pixel_mean():
    """uda.pseudo.threshold (ours): pixels of ŷ below τ weigh 0 but stay in the valid-pixel denominator."""
    logits = torch.zeros(1, 3, 8, 16)
    logits[:, 1, :, :4] = 10.0  # confident class-1 band (p ≈ 1); the rest uniform (p = 1/3)
    flow, flipped = _flow(1, 16, 32, 0.0), torch.tensor([False])
    pl = TemporalPseudoSupervision().labels(logits, flow, flipped, (16, 32))
    assert pl.p.shape == pl.y.shape
    assert float(pl.p[..., :4].min()) > 0.99 and float(pl.p[..., 4:].max()) < 0.34
    wrong = (20.0 * nn.functional.one_hot(pl.y, 3).permute(0, 3, 1, 2).float()).roll(1, dims=1)
    all_pixels = TemporalPseudoSupervision()
    tau = TemporalPseudoSupervision(threshold=0.9)
    full = float(all_pixels.loss(wrong, pl, reduction="valid_pixels"))
    kept = float(tau.loss(wrong, pl, reduction="valid_pixels"))
    assert kept == pytest.approx(full * 4 / 16, rel=1e-5)  # 4 of 16 columns confident, mean over all 16
    # a label tensor (the aux labels) takes the main labels' confidence
    assert float(tau.loss(wrong, pl.y, confidence=pl.p, reduction="valid_pixels")) == pytest.approx(kept)
    with pytest.raises(ValueError, match="needs its confidence"):
        tau.loss(wrong, pl.y)
    with pytest.raises(ValueError, match=r"uda\.pseudo\.threshold must be in \(0, 1\]"):
        TemporalPseudoSupervision(threshold=1.5)


# ---------------------------------------------------------------------------------------------- video QuadMix
H = W = 8


def _full(v: float, c: int = 3) -> torch.Tensor:
    return torch.full((1, c, H, W), float(v))


def _lab(v: int) -> torch.Tensor:
    return torch.full((1, H, W), v, dtype=torch.long)


def _first_call(mix: VideoQuadMix) -> list:
    """Step 0: memory of source (frames 1 / 2, flow 10), target frames (7 / 8, flow d→b 20) and the confident
    target masks: M_T^d = bottom-right quadrant (conf 0.95), M_T^c = top-left quadrant."""
    y_s = _lab(255)
    y_s[..., : W // 2] = 0  # left half: class 0
    y_sp = _lab(255)
    y_sp[:, : H // 2] = 0  # top half: class 0
    src = Clip(x=_full(1), x_prev=_full(2), flow=_full(10, 2), y=y_s, y_prev=y_sp)
    y_t, y_tp = _lab(3), _lab(3)
    p_t, p_tp = torch.full((1, H, W), 0.5), torch.full((1, H, W), 0.5)
    y_t[:, H // 2 :, W // 2 :], p_t[:, H // 2 :, W // 2 :] = 2, 0.95
    y_tp[:, : H // 2, : W // 2], p_tp[:, : H // 2, : W // 2] = 2, 0.95
    tgt = Clip(x=_full(50), x_prev=_full(60), flow=_full(0, 2), y=y_t, y_prev=y_tp)
    return mix(src, tgt, target_raw=(_full(7), _full(8)), confidence=(p_t, p_tp),
               target_flow_key=_full(20, 2), generator=_gen(), step=0)  # fmt: skip


def _second_call(mix: VideoQuadMix, step: int = 1) -> list:
    src = Clip(x=_full(3), x_prev=_full(4), flow=_full(30, 2), y=_lab(5), y_prev=_lab(6))
    tgt = Clip(x=_full(5), x_prev=_full(6), flow=_full(40, 2), y=_lab(7), y_prev=_lab(8))
    conf = (torch.full((1, H, W), 0.99), torch.full((1, H, W), 0.99))
    return mix(src, tgt, target_raw=(_full(70), _full(80)), confidence=conf, target_flow_key=_full(90, 2),
               generator=_gen(1), step=step)  # fmt: skip


def _regions() -> dict[str, torch.Tensor]:
    r = torch.zeros(H, W, dtype=torch.bool)
    left, top, br, tl = r.clone(), r.clone(), r.clone(), r.clone()
    left[:, : W // 2] = True
    top[: H // 2] = True
    br[H // 2 :, W // 2 :] = True
    tl[: H // 2, : W // 2] = True
    return {"left": left, "top": top, "br": br, "tl": tl}


def _compose(base: float, layers: list[tuple[torch.Tensor, float]]) -> torch.Tensor:
    out = torch.full((H, W), float(base))
    for m, v in layers:
        out[m] = v
    return out


@pytest.mark.parametrize("flow_mask", ["kf", "cf"])
def test_video_quadmix_mixes_frames_labels_and_flows_with_the_same_masks(flow_mask):
    mix = VideoQuadMix(flow_mask=flow_mask)
    assert _first_call(mix) == []  # the first step only fills the memory
    assert set(mix.memory) == set(VIDEO_MEMORY_KEYS)
    r = _regions()
    assert torch.equal(mix.memory["m_t"][0], r["br"]) and torch.equal(mix.memory["m_t_prev"][0], r["tl"])
    ss, st = _second_call(mix)
    assert (ss.name, st.name) == ("ss", "st")
    # M_S^cf = left half (class 0 of the previous source label), M_S^kf = top half (its t-1 label);
    # then the previous confident target pixels: M_T^d (bottom-right) on frame t, M_T^c (top-left) on t-1.
    cf, kf, mt, mtp = r["left"], r["top"], r["br"], r["tl"]
    fm, tfm = (kf, mtp) if flow_mask == "kf" else (cf, mt)
    for out, cur_x, cur_xp, cur_y, cur_yp, cur_f in ((ss, 3, 4, 5, 6, 30), (st, 5, 6, 7, 8, 40)):
        assert torch.equal(out.x[0, 0], _compose(cur_x, [(cf, 1), (mt, 7)]))
        assert torch.equal(out.x_prev[0, 2], _compose(cur_xp, [(kf, 2), (mtp, 8)]))
        assert torch.equal(out.y[0], _compose(cur_y, [(cf, 0), (mt, 2)]).long())
        assert torch.equal(out.y_prev[0], _compose(cur_yp, [(kf, 0), (mtp, 2)]).long())
        assert torch.equal(out.flow[0, 1], _compose(cur_f, [(fm, 10), (tfm, 20)]))
        assert torch.equal(out.pasted[0, 0].bool(), cf | mt)
        assert not out.fusio_mask.any()  # no long-tail paste: the warped key frame is used everywhere
    # the memory now holds this step's clips (un-augmented target frames, flow d→b)
    mem = mix.memory
    assert float(mem["s_x"].unique()) == 3 and float(mem["t_x"].unique()) == 70
    assert float(mem["t_x_prev"].unique()) == 80 and float(mem["t_flow"].unique()) == 90
    assert torch.equal(mem["t_y"], _lab(7)) and mem["m_t"].all()  # conf 0.99 everywhere, class 7 chosen


def test_video_quadmix_waits_for_quadmix_start_and_keeps_its_memory_in_the_checkpoint():
    mix = VideoQuadMix(quadmix_start=5)
    _first_call(mix)
    assert _second_call(mix, step=1) == []  # before quadmix_start: memory only
    state = mix.state_dict()
    other = VideoQuadMix(quadmix_start=5)
    other.load_state_dict(state)
    for k in VIDEO_MEMORY_KEYS:
        assert torch.equal(other.memory[k], mix.memory[k]), k
    gathered = mix.gather_extra_state()
    assert len(gathered["per_rank"]) == 1 and set(gathered["per_rank"][0]) == set(VIDEO_MEMORY_KEYS)
    with pytest.raises(ValueError, match="video QuadMix memory needs keys"):
        other.load_memory_state({"x_s": torch.zeros(1)})
    with pytest.raises(ValueError, match="one size"):
        bad = Clip(x=_full(0), x_prev=torch.zeros(1, 3, 4, 4), flow=_full(0, 2), y=_lab(0), y_prev=_lab(0))
        other(bad, bad, target_raw=(_full(0), _full(0)), confidence=(_lab(0), _lab(0)),
              target_flow_key=_full(0, 2), generator=_gen(), step=9)  # fmt: skip


class _FakePaster:
    """Long-tail donor stub: class 9 in rows 0-1, columns 6-7, donor pixels = 99."""

    classes = [9]
    num_classes = 1
    paste_frames = RareClassPaster.paste_frames  # the real pasting around the stubbed donor draw

    def sample_donor(self, class_id, size_hw, generator):
        lab = torch.full(size_hw, 255, dtype=torch.long)
        lab[0:2, 6:8] = class_id
        return torch.full((3, *size_hw), 99.0), lab


def test_video_quadmix_pastes_long_tail_donors_into_all_four_frames_and_sets_the_fusio_mask():
    mix = VideoQuadMix(rare_paster=_FakePaster(), source_rare_classes=[5])
    _first_call(mix)
    ss, st = _second_call(mix)
    square = torch.zeros(H, W, dtype=torch.bool)
    square[0:2, 6:8] = True
    for out in (ss, st):
        for frame in (out.x, out.x_prev):
            assert torch.equal(frame[0, :, square], torch.full((3, 4), 99.0))
        assert (out.y[0][square] == 9).all() and (out.y_prev[0][square] == 9).all()
        assert torch.equal(out.fusio_mask[0, 0].bool(), square)  # fusio region = the long-tail paste
    fused = VideoQuadMix(rare_paster=_FakePaster(), fusio_region="pasted")
    _first_call(fused)
    ss, _ = _second_call(fused)
    assert torch.equal(ss.fusio_mask, ss.pasted) and ss.pasted[0, 0][square].all()


def test_video_quadmix_always_pastes_the_rare_source_classes():
    """C_S = 2 random classes ∪ the rare set: with one random class drawn, class 4 is pasted anyway."""
    mix = VideoQuadMix(num_source_classes=1, source_rare_classes=[4])
    _first_call(mix)
    y = mix.memory["s_y"]
    y[0, :, : W // 2] = 0
    y[0, :, W // 2 :] = 1
    y[0, 0, W - 1] = 4  # one pixel of the rare class
    mix.memory["s_y_prev"].copy_(y)
    ss, _ = _second_call(mix)
    assert int(ss.y[0, 0, W - 1]) == 4
    # exactly one of classes 0 (left half) and 1 (right half minus the rare pixel and the target paste)
    n0, n1 = int((ss.y[0] == 0).sum()), int((ss.y[0] == 1).sum())
    assert (n0, n1) in ((H * W // 2, 0), (0, H * W // 2 - 1 - H * W // 4))


# ---------------------------------------------------------------------------------------------- MMD
def test_class_prototypes_hand_computed():
    logits = torch.tensor([[[[2.0, 0.0], [3.0, 1.0]], [[0.0, 1.0], [0.0, 5.0]]]])  # (1,2,2,2)
    # argmax: [[0, 1], [0, 1]]
    protos, present = class_prototypes(logits, None, min_pixels=1)
    assert torch.allclose(protos, torch.tensor([[2.5, 0.0], [0.5, 3.0]])) and present.all()
    labels = torch.tensor([[[0, 0], [1, 1]]])  # correct at (0,0) (class 0) and (1,1) (class 1)
    protos, present = class_prototypes(logits, labels, min_pixels=1)
    assert torch.allclose(protos, torch.tensor([[2.0, 0.0], [1.0, 5.0]]))
    protos, present = class_prototypes(logits, labels, min_pixels=2)  # too few pixels: zero rows
    assert not present.any() and protos.abs().sum() == 0


def test_mmd_is_zero_for_identical_prototype_sets_and_positive_otherwise():
    torch.manual_seed(0)
    x = torch.randn(6, 6)
    assert float(multi_kernel_mmd(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(multi_kernel_mmd(x, x + 0.5)) > 1e-3
    assert float(multi_kernel_mmd(x, torch.randn(6, 6))) > 1e-3
    mmd = PrototypeMMD(min_pixels=1, target_weights=(0.5, 0.5))
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    labels = logits.detach().argmax(1)
    same = mmd(logits, labels, [logits, logits])
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 4, 8, 8, requires_grad=True)
    diff = mmd(logits, labels, [other, other])
    assert float(diff.detach()) > 1e-4
    diff.backward()
    assert logits.grad is not None and other.grad is not None and other.grad.abs().sum() > 0
    assert mmd.weight == 0.01  # udass.md §2.6.6
    with pytest.raises(ValueError, match="target predictions"):
        mmd(logits, labels, [other])


# ----------------------------------------------------------------------------------------- teacher switch
class _ListBackbone(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m, self.drop = m, nn.Dropout(0.5)

    def forward(self, x):
        return [self.drop(self.m(x))]


class _ListHead(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m, self.num_classes = m, m.num_classes

    def forward(self, feats):
        return self.m(feats[-1])


def _temporal() -> TemporalSegmentor:
    """A tiny two-frame model with a dropout layer (1x1 convs)."""
    head = nn.Conv2d(3, 2, 1)
    head.num_classes = 2
    return TemporalSegmentor(backbone=_ListBackbone(nn.Conv2d(3, 3, 1)), head=_ListHead(head), num_classes=2)


def test_switch_teacher_labels_with_the_frozen_model_then_the_student(tmp_path):
    torch.manual_seed(0)
    student = _temporal()
    teacher = SwitchTeacher(student=student, switch_step=2)
    teacher.update(student, 0)  # the frozen model = the student's initial weights
    frozen = [p.clone() for p in teacher.model.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student, 1)
    with teacher.pseudo_label_model() as m:
        assert m.model is teacher.model and not m.model.backbone.drop.training  # dropout off for labels
    assert all(torch.equal(a, b) for a, b in zip(frozen, teacher.model.parameters()))
    student.train()
    teacher.update(student, 2)
    with teacher.pseudo_label_model() as m:
        assert m.model is student and m.input_norm == "imagenet" and not student.backbone.drop.training
    assert student.backbone.drop.training  # the student's modes are restored
    x = torch.randn(1, 3, 4, 4)
    assert torch.allclose(teacher.predict(x).sum(1), torch.ones(1, 4, 4))
    # a checkpoint of this library (student.* keys) of an image model: the fusion layer may be missing
    state = {f"student.{k}": v + 5.0 for k, v in student.state_dict().items() if not k.startswith("sf_layer")}
    torch.save({"state_dict": state}, tmp_path / "run.ckpt")
    t2 = SwitchTeacher(student=student, switch_step=10, checkpoint=str(tmp_path / "run.ckpt"))
    t2.update(student, 0)
    w = next(iter(t2.model.backbone.parameters()))
    assert torch.allclose(w, next(iter(student.backbone.parameters())) + 5.0)
    torch.save({"state_dict": {"student.other.weight": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="does not fit the teacher's model"):
        SwitchTeacher(student=student, checkpoint=str(tmp_path / "bad.ckpt")).update(student, 0)
    with pytest.raises(FileNotFoundError, match="uda.teacher.checkpoint"):
        SwitchTeacher(student=student, checkpoint=str(tmp_path / "none.ckpt")).update(student, 0)
    assert not any(k.startswith("_student") for k in teacher.state_dict())  # the student is not duplicated
    # a phase fraction must be resolved before (UDAModule does): int(0.15) would switch at step 0
    with pytest.raises(ValueError, match=r"switch_step=0.15 is a fraction of trainer.max_steps"):
        SwitchTeacher(student=student, switch_step=0.15)
    assert SwitchTeacher(student=student, switch_step=400.0).switch_step == 400  # a whole float is a step


def test_switch_teacher_with_a_mean_teacher_after_the_switch():
    torch.manual_seed(0)
    student = _temporal()
    teacher = SwitchTeacher(student=student, switch_step=2, after_switch="ema", alpha=0.75)
    assert teacher.update(student, 0) == 0.0 and teacher.update(student, 1) == 0.0
    with teacher.pseudo_label_model() as m:
        assert m.model is teacher.model  # the frozen model before the switch
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    at_switch = [p.clone() for p in student.parameters()]
    assert teacher.update(student, 2) == 0.0  # the switch: the mean teacher = the student's copy
    assert all(torch.equal(a, b) for a, b in zip(at_switch, teacher.ema.parameters()))
    with torch.no_grad():
        for p in student.parameters():
            p.add_(4.0)
    assert teacher.update(student, 3) == 0.75
    # 0.75 * w + 0.25 * (w + 4) = w + 1, by hand
    assert all(torch.allclose(e, a + 1.0) for e, a in zip(teacher.ema.parameters(), at_switch))
    student.train()
    with teacher.pseudo_label_model() as m:
        assert m.model is teacher.ema and not teacher.ema.backbone.drop.training
    assert student.backbone.drop.training
    assert any(k.startswith("ema.") for k in teacher.state_dict())  # resumed runs keep the mean teacher
    assert not any(k.startswith("ema.") for k in SwitchTeacher(student=student).state_dict())
    with pytest.raises(ValueError, match="uda.teacher.after_switch must be one of"):
        SwitchTeacher(student=student, after_switch="mean")
    with pytest.raises(ValueError, match=r"uda.teacher.alpha must be in \[0, 1\]"):
        SwitchTeacher(student=student, after_switch="ema", alpha=1.5)


# ----------------------------------------------------------------------------------------- best checkpoint
def test_best_checkpoint_keeps_the_best_validation_by_the_protocol_subset():
    best = BestCheckpoint()
    module = SimpleNamespace(subsets={"11": tuple(range(11))}, last_summary=None)
    for step, miou, sub in ((100, 50.0, 40.0), (200, 45.0, 44.0), (300, 55.0, 42.0)):
        module.last_summary = {"mIoU": miou, "subsets": {"11": sub}, "per_class": {}}
        best.on_validation_end(SimpleNamespace(sanity_checking=False, global_step=step), module)
    out = best.results()
    # best_mIoU is the selection subset's mIoU (mIoU11), not the mean over the 12 trained classes (45.0)
    assert out == {
        "best_mIoU": 44.0,
        "best_selected_by": "mIoU11",
        "best_step": 200,
        "best_subsets": {"11": 44.0},
        "best_mIoU_all": 45.0,
    }
    restored = BestCheckpoint()
    restored.load_state_dict(best.state_dict())
    assert restored.results() == out
    plain = BestCheckpoint()
    module = SimpleNamespace(subsets={"all": (0, 1)}, last_summary={"mIoU": 3.0, "subsets": {"all": 3.0}})
    plain.on_validation_end(SimpleNamespace(sanity_checking=False, global_step=7), module)
    assert plain.results()["best_selected_by"] == "mIoU" and plain.results()["best_step"] == 7
    assert BestCheckpoint().results() == {}


def _numpy_match_histograms(src, ref):
    """skimage.exposure.match_histograms, channel by channel (video_uda.md §3.3 step 1), in numpy."""
    import numpy as np

    out = np.empty_like(src, dtype=np.float64)
    for c in range(src.shape[0]):
        s, r = src[c].ravel(), ref[c].ravel()
        values, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
        t_values, t_counts = np.unique(r, return_counts=True)
        q, tq = np.cumsum(counts) / s.size, np.cumsum(t_counts) / r.size
        out[c] = np.interp(q, tq, t_values)[inverse].reshape(src[c].shape)
    return out


def test_match_histograms_equals_the_cdf_matching_of_skimage():
    from src.uda.video.tps import match_histograms

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 12, 16), generator=g).float()
    ref = (torch.rand(2, 3, 9, 20, generator=g) ** 3 * 255).round()  # another size, another distribution
    out = match_histograms(x, ref)
    for b in range(2):
        expected = _numpy_match_histograms(x[b].numpy(), ref[b].numpy())
        assert torch.allclose(out[b].double(), torch.from_numpy(expected), atol=1e-3)
    # equal sizes and distinct source values: the output takes exactly the reference's values
    x1 = torch.randperm(48, generator=g).float().view(1, 1, 6, 8)
    r1 = torch.rand(1, 1, 6, 8, generator=g)
    assert torch.allclose(match_histograms(x1, r1).flatten().sort().values, r1.flatten().sort().values)
    # a common per-channel increasing affine map (the normalisation) commutes with the matching
    a = torch.tensor([0.5, 2.0, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(match_histograms(x * a - 3, ref * a - 3), out * a - 3, atol=1e-3)
    with pytest.raises(ValueError, match="same channels"):
        match_histograms(x, ref[:, :2])


def test_tps_rescale_view_scales_frames_and_flow_by_one_factor():
    tps = TemporalPseudoSupervision(rescale=(0.8, 1.2))
    x, xp = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    flow = _flow(2, 64, 96, 4.0, -2.0)
    sizes = set()
    for seed in range(6):
        a, b, f = tps.rescale_view(x, xp, flow, _gen(seed))
        h, w = a.shape[-2:]
        sizes.add((h, w))
        assert a.shape == b.shape and f.shape[-2:] == (h, w) and h % 8 == 0 and w % 8 == 0
        assert 0.8 * 64 - 4 <= h <= 1.2 * 64 + 4 and 0.8 * 96 - 4 <= w <= 1.2 * 96 + 4
        assert torch.allclose(f[:, 0], torch.full_like(f[:, 0], 4.0 * w / 96))  # pixels of the new grid
        assert torch.allclose(f[:, 1], torch.full_like(f[:, 1], -2.0 * h / 64))
    assert len(sizes) > 1
    off = TemporalPseudoSupervision()
    assert all(v is u for v, u in zip(off.rescale_view(x, xp, flow, _gen()), (x, xp, flow), strict=True))
    with pytest.raises(ValueError, match="uda.pseudo.rescale"):
        TemporalPseudoSupervision(rescale=(1.2, 0.8))


@pytest.mark.parametrize("flip_quirk", [False, True])
def test_tps_low_res_labels_are_the_labels_y(flip_quirk):
    """The aux output's ŷ (low_res_labels) is labels().y exactly, mirrored weak views and the quirk too."""
    tps = TemporalPseudoSupervision(flip_quirk=flip_quirk)
    logits = torch.randn(2, 4, 8, 16, generator=_gen(3))
    flow, flipped = _flow(2, 16, 32, 3.0, -1.0), torch.tensor([True, False])
    pl = tps.labels(logits, flow, flipped, (16, 32))
    assert torch.equal(tps.low_res_labels(logits, flow, flipped), pl.y)
