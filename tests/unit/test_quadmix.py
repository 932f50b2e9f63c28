"""QuadMix (udass.md §1.4): the four directions, confidence gate, class disjointness, weights, phase switch,
memory round-trip through a state_dict, feature mixing, configs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from src.uda.augment import StrongAugment
from src.uda.mixing.classmix import ClassMix, MixOutput
from src.uda.mixing.quadmix import FeaturePartner, QuadMix, feature_mix
from src.utils.phases import resolve_phases

H = W = 8
CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_cfg(overrides: list[str]):
    import src.utils.config  # noqa: F401  (resolvers)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _identity_aug() -> StrongAugment:
    """Never jitters (U > 1.0 is impossible) and never blurs: mixed pixels stay exact copies."""
    return StrongAugment(color_jitter_p=1.0, blur=False)


def _qm(**kw) -> QuadMix:
    kw.setdefault("quadmix_start", 1)
    kw.setdefault("augment", _identity_aug())
    return QuadMix(**kw)


def _batch(seed: int, y_s: torch.Tensor, y_t: torch.Tensor, p_max: torch.Tensor, w: float | torch.Tensor):
    g = torch.Generator().manual_seed(seed)
    b = y_s.shape[0]
    x_s = torch.randn(b, 3, H, W, generator=g)
    x_t = torch.randn(b, 3, H, W, generator=g)
    w_t = w if isinstance(w, torch.Tensor) else torch.full((b, H, W), float(w))
    return x_s, y_s, x_t, y_t, w_t, p_max


def _call(qm: QuadMix, batch, step: int, seed: int = 0) -> list[MixOutput]:
    x_s, y_s, x_t, y_t, w_t, p_max = batch
    return qm(x_s, y_s, x_t, y_t, w_t, torch.Generator().manual_seed(seed), step=step, p_max=p_max)


def _prev_maps():
    """Previous source: cols 0-3 class 1 / 2, cols 4-7 ignore. Previous target: rows 0-1 class 1 (a source
    class), rows 2-3 class 7, rows 4-7 class 8 with rows 6-7 unconfident (p_max 0.5)."""
    y_s = torch.full((1, H, W), 255, dtype=torch.long)
    y_s[0, :, 0:2] = 1
    y_s[0, :, 2:4] = 2
    y_t = torch.full((1, H, W), 8, dtype=torch.long)
    y_t[0, 0:2] = 1
    y_t[0, 2:4] = 7
    p = torch.full((1, H, W), 0.95)
    p[0, 6:8] = 0.5
    return y_s, y_t, p


def _current_maps():
    return torch.full((1, H, W), 5, dtype=torch.long), torch.full((1, H, W), 6, dtype=torch.long)


def test_four_directions_labels_weights_and_loss_weights() -> None:
    y_s0, y_t0, p0 = _prev_maps()
    w_prev = torch.rand(1, H, W, generator=torch.Generator().manual_seed(3))  # per-pixel, to see pixel copies
    prev = _batch(1, y_s0, y_t0, p0, w_prev)
    y_s1, y_t1 = _current_maps()
    cur = _batch(2, y_s1, y_t1, torch.full((1, H, W), 0.99), 0.6)
    qm = _qm()
    _call(qm, prev, step=0)
    out = _call(qm, cur, step=1)
    assert len(out) == 2 and all(o.loss_weight == 0.5 for o in out)
    tss, tst = out
    # C_S = {1, 2} (255 excluded) -> M_S = cols 0-3; C_T = {7, 8} (1 is a source class), c90 gate -> rows 2-5.
    m_s = torch.zeros(H, W, dtype=torch.bool)
    m_s[:, :4] = True
    m_t = torch.zeros(H, W, dtype=torch.bool)
    m_t[2:6] = True
    xs0, _, xt0, _, _, _ = prev
    xs1, _, xt1, _, _, _ = cur
    for o, x_bg, y_bg, w_bg in ((tss, xs1, 5, 1.0), (tst, xt1, 6, 0.6)):
        exp_x = torch.where(m_t, xt0[0], torch.where(m_s, xs0[0], x_bg[0]))
        assert torch.equal(o.x_mix[0], exp_x)
        exp_y = torch.where(m_t, y_t0[0], torch.where(m_s, y_s0[0], torch.full((H, W), y_bg)))
        assert torch.equal(o.y_mix[0], exp_y)
        exp_w = torch.where(m_t, w_prev[0], torch.where(m_s, torch.ones(H, W), torch.full((H, W), w_bg)))
        assert torch.equal(o.w_mix[0], exp_w)
        assert torch.equal(o.mask[0, 0].bool(), m_s | m_t)
    # spot checks by hand: S->S pixel (row 0, col 0) is the previous source, class 1, weight 1;
    # T->(S->T) pixel (row 3, col 6) is the previous target, class 7, its previous weight.
    assert (
        tss.y_mix[0, 0, 0] == 1
        and tss.w_mix[0, 0, 0] == 1.0
        and torch.equal(tss.x_mix[0, :, 0, 0], xs0[0, :, 0, 0])
    )
    assert tst.y_mix[0, 3, 6] == 7 and tst.w_mix[0, 3, 6] == w_prev[0, 3, 6]
    assert tst.y_mix[0, 7, 7] == 6 and tst.w_mix[0, 7, 7] == pytest.approx(0.6)  # untouched current target
    assert tss.y_mix[0, 7, 7] == 5 and tss.w_mix[0, 7, 7] == 1.0  # untouched current source
    assert tss.feature_partner is None and tst.feature_partner is None  # feature mixing off by default


def test_confidence_gate_is_p_max_at_least_threshold() -> None:
    y_s0 = torch.full((1, H, W), 255, dtype=torch.long)  # no source class: M_S empty
    y_t0 = torch.full((1, H, W), 7, dtype=torch.long)
    p0 = torch.full((1, H, W), 0.95)
    p0[0, 0, :4] = 0.9  # exactly the threshold: confident
    p0[0, 1, :] = 0.8999
    p0[0, 2, :] = 0.1
    prev = _batch(1, y_s0, y_t0, p0, 0.3)
    y_s1, y_t1 = _current_maps()
    cur = _batch(2, y_s1, y_t1, torch.ones(1, H, W), 0.6)
    qm = _qm()
    _call(qm, prev, step=0)
    tss, tst = _call(qm, cur, step=1)
    c90 = p0[0] >= 0.9
    assert c90[0, :4].all() and not c90[1:3].any()
    assert torch.equal(tss.y_mix[0] == 7, c90) and torch.equal(tst.y_mix[0] == 7, c90)
    assert torch.equal(tss.x_mix[0], torch.where(c90, prev[2][0], cur[0][0]))
    assert torch.equal(tst.w_mix[0], torch.where(c90, torch.tensor(0.3), torch.tensor(0.6)))


def _disjoint_maps():
    """Previous source classes {3, 4} (indices 0, 1); previous target rows 0-1 class 0, rows 2-3 class 3,
    rows 4-7 class 7, all confident."""
    y_s = torch.full((1, H, W), 3, dtype=torch.long)
    y_s[0, :, 4:] = 4
    y_t = torch.full((1, H, W), 7, dtype=torch.long)
    y_t[0, 0:2] = 0
    y_t[0, 2:4] = 3
    return y_s, y_t, torch.ones(1, H, W)


@pytest.mark.parametrize("mode, rows", [("intended", [0, 1, 4, 5, 6, 7]), ("reference", [2, 3, 4, 5, 6, 7])])
def test_class_disjointness_intended_and_reference_bug(mode: str, rows: list[int]) -> None:
    # intended: exclude ids {3, 4} -> C_T = {0, 7}; reference: exclude ids equal to indices {0, 1} -> {3, 7}
    prev = _batch(1, *_disjoint_maps(), 0.3)
    y_s1, y_t1 = _current_maps()
    qm = _qm(disjoint=mode)
    _call(qm, prev, step=0)
    tss, _ = _call(qm, _batch(2, y_s1, y_t1, torch.ones(1, H, W), 0.6), step=1)
    pasted_rows = [r for r in range(H) if bool((tss.x_mix[0, :, r] == prev[2][0, :, r]).all())]
    assert pasted_rows == rows


def test_target_classes_never_source_classes_random_maps() -> None:
    g = torch.Generator().manual_seed(0)
    qm = _qm()
    seen_bug = False
    for _ in range(200):
        y_s = torch.randint(2, 9, (H, W), generator=g)  # ids offset from their indices in unique(y_s)
        y_t = torch.randint(0, 9, (H, W), generator=g)
        conf = torch.ones(H, W, dtype=torch.bool)
        ids, idx = qm.choose_source_classes(y_s, g)
        assert ids.numel() == 2 and torch.equal(ids, torch.unique(y_s)[idx])
        ct = qm.choose_target_classes(y_t, conf, ids, idx, g)
        assert not torch.isin(ct, ids).any()
        qm.disjoint = "reference"
        ct_ref = qm.choose_target_classes(y_t, conf, ids, idx, g)
        qm.disjoint = "intended"
        assert not torch.isin(ct_ref, idx).any()
        seen_bug |= bool(torch.isin(ct_ref, ids).any())
    assert seen_bug  # the reference comparison lets source classes through


def test_ignore_as_source_class_only_with_include_ignore() -> None:
    y = torch.full((H, W), 255, dtype=torch.long)
    y[:, :2] = 4
    g = torch.Generator().manual_seed(0)
    assert _qm().choose_source_classes(y, g)[0].tolist() == [4]
    ids, idx = _qm(include_ignore=True).choose_source_classes(y, g)
    assert sorted(ids.tolist()) == [4, 255] and sorted(idx.tolist()) == [0, 1]


def test_target_pool_confident_only() -> None:
    y_t = torch.full((H, W), 7, dtype=torch.long)
    y_t[:4] = 9
    conf = torch.zeros(H, W, dtype=torch.bool)
    conf[4:] = True  # class 9 has no confident pixel
    g = torch.Generator().manual_seed(0)
    none = torch.tensor([], dtype=torch.long)
    assert _qm(target_class_pool="confident").choose_target_classes(y_t, conf, none, none, g).tolist() == [7]
    assert sorted(_qm().choose_target_classes(y_t, conf, none, none, g).tolist()) == [7, 9]


def test_phase_switch_and_first_call_fallback() -> None:
    y_s0, y_t0, p0 = _prev_maps()
    batch = _batch(1, y_s0, y_t0, p0, 0.3)
    qm = _qm(quadmix_start=2)
    # before quadmix_start: exactly the ClassMix output with the same generator, loss weight 1
    cm = ClassMix(class_choice="batch", augment=_identity_aug())
    ref = cm(*batch[:5], torch.Generator().manual_seed(0))
    out = _call(qm, batch, step=0)
    assert len(out) == 1 and out[0].loss_weight == 1.0 and out[0].feature_partner is None
    assert torch.equal(out[0].x_mix, ref.x_mix) and torch.equal(out[0].y_mix, ref.y_mix)
    assert len(_call(qm, batch, step=1)) == 1
    assert len(_call(qm, batch, step=2)) == 2  # memory filled during the ClassMix phase
    # first call ever at/after quadmix_start: no memory yet -> ClassMix; the next call is QuadMix
    fresh = _qm(quadmix_start=0)
    assert fresh.memory == {}
    assert len(_call(fresh, batch, step=0)) == 1
    assert len(_call(fresh, batch, step=1)) == 2
    # a batch of another shape cannot pair with the memory -> ClassMix for that step
    big = _batch(4, torch.cat([y_s0, y_s0]), torch.cat([y_t0, y_t0]), torch.cat([p0, p0]), 0.3)
    assert len(_call(fresh, big, step=2)) == 1
    assert len(_call(fresh, big, step=3)) == 2


def test_memory_is_a_detached_clone_of_the_current_batch() -> None:
    y_s0, y_t0, p0 = _prev_maps()
    x_s, y_s, x_t, y_t, w_t, p = _batch(1, y_s0.clone(), y_t0, p0, 0.3)
    x_s.requires_grad_(True)
    qm = _qm()
    qm(x_s, y_s, x_t, y_t, w_t, torch.Generator().manual_seed(0), step=0, p_max=p)
    mem = qm.memory
    assert set(mem) == {"x_s", "y_s", "x_t", "y_t", "c90", "w_t"}
    assert torch.equal(mem["x_s"], x_s.detach()) and not mem["x_s"].requires_grad
    assert torch.equal(mem["c90"], p >= 0.9) and torch.equal(mem["w_t"], w_t)
    x_t.add_(1.0)
    y_s.fill_(0)
    assert not torch.equal(mem["x_t"], x_t) and torch.equal(mem["y_s"], y_s0)


def test_memory_round_trip_through_a_checkpoint() -> None:
    y_s0, y_t0, p0 = _prev_maps()
    prev = _batch(1, y_s0, y_t0, p0, 0.3)
    y_s1, y_t1 = _current_maps()
    cur = _batch(2, y_s1, y_t1, torch.full((1, H, W), 0.99), 0.6)

    class Host(nn.Module):  # the LightningModule holds the mixer as `mix`
        def __init__(self) -> None:
            super().__init__()
            self.mix = QuadMix(quadmix_start=1)  # default augment: jitter and blur on

    a = Host()
    _call(a.mix, prev, step=0)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert "mix._extra_state" in sd
    b = Host()
    assert b.mix.memory == {}
    b.load_state_dict(sd)
    for k, v in a.mix.memory.items():
        assert torch.equal(b.mix.memory[k], v) and b.mix.memory[k].dtype == v.dtype
    out_a = _call(a.mix, cur, step=1, seed=7)
    out_b = _call(b.mix, cur, step=1, seed=7)
    assert len(out_a) == len(out_b) == 2
    for oa, ob in zip(out_a, out_b, strict=True):
        for f in ("x_mix", "y_mix", "w_mix", "mask"):
            assert torch.equal(getattr(oa, f), getattr(ob, f)), f
    # an empty memory round-trips too (the key always exists, so strict loading works before the first step)
    c, d = Host(), Host()
    d.load_state_dict(c.state_dict())
    assert d.mix.memory == {}


def test_gather_extra_state_single_process_per_rank() -> None:
    y_s0, y_t0, p0 = _prev_maps()
    qm = _qm()
    _call(qm, _batch(1, y_s0, y_t0, p0, 0.3), step=0)
    state = qm.gather_extra_state(qm.get_extra_state())
    assert len(state["per_rank"]) == 1
    other = _qm()
    other.set_extra_state({"version": 1, "memory": {}, "per_rank": state["per_rank"]})  # rank 0 picks entry 0
    assert torch.equal(other.memory["x_t"], qm.memory["x_t"])


def test_feature_mix_values_nearest_area_and_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 2, 4, 4, generator=g, requires_grad=True)
    b = torch.randn(1, 2, 4, 4, generator=g, requires_grad=True)
    region = torch.zeros(1, 1, 16, 16)
    region[..., :8, :8] = 1.0  # top-left quarter -> top-left 2x2 of the 4x4 embedding
    out = feature_mix(a, b, region, alpha=0.7)
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[:2, :2] = True
    assert torch.allclose(out[..., inside], 0.7 * a[..., inside] + 0.3 * b[..., inside])
    assert torch.equal(out[..., ~inside], a[..., ~inside])
    out.sum().backward()
    assert torch.allclose(b.grad[..., inside], torch.full_like(b.grad[..., inside], 0.3))
    assert (b.grad[..., ~inside] == 0).all() and torch.allclose(
        a.grad[..., inside], torch.full((1, 2, 4), 0.7)
    )
    # detach_b: no gradient into the partner
    b.grad = None
    feature_mix(a, b, region, detach_b=True).sum().backward()
    assert b.grad is None
    # area: a 4x4 block half covered gives r = 0.5 -> a + 0.5 * 0.3 * (b - a)
    half = torch.zeros(1, 1, 16, 16)
    half[..., :2, :4] = 1.0
    out = feature_mix(a.detach(), b.detach(), half, alpha=0.7, mode="area")
    assert torch.allclose(out[..., 0, 0], a[..., 0, 0] + 0.15 * (b[..., 0, 0] - a[..., 0, 0]))
    assert torch.allclose(out[..., 1:, :], a[..., 1:, :])


class _StubPaster:
    """Pastes class 12 into the bottom-right 2x2 pixels, image value 9 (stands in for RareClassPaster)."""

    def paste(self, x, y, generator):
        x, y = x.clone(), y.clone()
        m = torch.zeros(y.shape, dtype=torch.bool)
        m[:, 6:, 6:] = True
        x[m.unsqueeze(1).expand_as(x)] = 9.0
        y[m] = 12
        return x, y, m


def test_feature_partner_region_and_rare_paste_keeps_weights() -> None:
    y_s0, y_t0, p0 = _prev_maps()
    prev = _batch(1, y_s0, y_t0, p0, 0.3)
    y_s1, y_t1 = _current_maps()
    cur = _batch(2, y_s1, y_t1, torch.full((1, H, W), 0.99), 0.6)
    qm = _qm(feature_mix=True, feature_mix_alpha=0.6, rare_paster=_StubPaster())
    _call(qm, prev, step=0)
    tss, tst = _call(qm, cur, step=1)
    rare = torch.zeros(H, W, dtype=torch.bool)
    rare[6:, 6:] = True
    for o, w_bg in ((tss, 1.0), (tst, 0.6)):
        assert (o.y_mix[0][rare] == 12).all() and (o.x_mix[0][:, rare] == 9.0).all()
        assert torch.allclose(
            o.w_mix[0][rare], torch.full((4,), w_bg)
        )  # pasted pixels keep the weight beneath
    assert tss.feature_partner is None
    fp = tst.feature_partner
    assert isinstance(fp, FeaturePartner) and fp.index == 0 and fp.alpha == 0.6 and fp.mode == "nearest"
    exp = torch.zeros(H, W, dtype=torch.bool)
    exp[:, :4] = True  # M_S
    exp[2:6] = True  # M_T
    exp &= ~rare
    assert fp.region.shape == (1, 1, H, W) and torch.equal(fp.region[0, 0].bool(), exp)


def test_configs_compose_and_build() -> None:
    cfg = compose_cfg(["experiment=udass_synthetic", "paths.data_dir=/nonexistent"])
    assert cfg.uda.name == "udass" and cfg.uda.mask is not None and cfg.uda.fd is not None
    run = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("trainer", "uda")}
    uda = resolve_phases(run)["uda"]  # fractions of the run to steps, as UDAModule does
    qm = instantiate(OmegaConf.create(uda["mix"]))  # the paster reads its index lazily: no data needed here
    assert isinstance(qm, QuadMix) and qm.quadmix_start == 150 and qm.sample_weight == 0.5
    assert qm.classmix.class_choice == "batch" and qm.classmix.augment is qm.augment
    with pytest.raises(ValueError, match="quadmix_start=0.15 is a fraction"):  # never int(0.15) == 0
        QuadMix(quadmix_start=0.15)
    assert str(qm.rare_paster.root) == "/nonexistent/synthetic/source" and qm.rare_paster.min_pixels == 10
    host = compose_cfg(["experiment=dacs_synthetic", "uda/mix=quadmix"])
    assert host.uda.name == "dacs" and host.uda.mix._target_.endswith("QuadMix")
    both = compose_cfg(["experiment=omuda_udass_synthetic"])  # OMUDA host + QuadMix
    assert both.uda.name == "omuda_udass" and both.uda.mix.quadmix_start == 0.15
    assert both.uda.pseudo._target_.endswith("ClassDecoupledPseudoLabeler")
    gta = compose_cfg(["experiment=udass_gta_dlv2", "paths.data_dir=/d"])
    paster = OmegaConf.to_container(gta.uda.mix.rare_paster, resolve=True)
    assert gta.model.name == "deeplabv2_r101" and gta.uda.mix.quadmix_start == 7000
    assert paster["root"] == "/d/gta" and paster["loader"]["dataset"]["_target_"].endswith("GTA5Dataset")
