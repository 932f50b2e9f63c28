"""OMUDA CDM: class thresholds, floor, soft weights, warm-up, running statistics, state, variants
(reference/omuda.md §4.3, §3.2, §3.3)."""

from __future__ import annotations

import io
import math

import pytest
import torch

from src.uda import cdm as cdm_mod
from src.uda.cdm import ClassDecoupledPseudoLabeler
from src.uda.pseudo_label import PseudoLabeler


def _probs(conf: list[float] | torch.Tensor, label: list[int] | torch.Tensor, c: int = 3) -> torch.Tensor:
    """(1, c, 1, N) probabilities with p_max = conf at ``label``, the rest spread evenly."""
    conf = torch.as_tensor(conf, dtype=torch.float32).view(1, 1, -1)
    label = torch.as_tensor(label).view(1, 1, -1)
    p = ((1 - conf) / (c - 1)).unsqueeze(1).repeat(1, c, 1, 1)
    return p.scatter(1, label.unsqueeze(1), conf.unsqueeze(1))


def _u(a: float, c: int = 3) -> float:
    """Normalised entropy of (a, (1-a)/(c-1), ...)."""
    r = (1 - a) / (c - 1)
    return -(a * math.log(a) + (c - 1) * r * math.log(r)) / math.log(c)


CONF = [0.99, 0.9, 0.8, 0.6, 0.95, 0.7, 0.5, 0.98, 0.85, 0.4]
LABEL = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


def _cdm(**kw) -> ClassDecoupledPseudoLabeler:
    kw = {"num_classes": 3, "warmup_steps": 0, "floor": 0.0, **kw}
    return ClassDecoupledPseudoLabeler(**kw)


def test_class_thresholds_on_a_hand_made_entropy_map() -> None:
    m = _cdm().eval()
    m.mu.copy_(torch.tensor([0.3, 0.1, 0.5]))
    m.sigma.copy_(torch.tensor([0.2, 0.4, 0.6]))  # t_c = mu + 0.5 sigma = 0.4, 0.3, 0.8
    u = [_u(a) for a in CONF]
    # class 0: u = .057 .359 | .582 .865 ; class 1: .212 | .745 .946 ; class 2: .102 .479 | .991
    expected = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert [float(x <= t) for x, t in zip(u, [0.4] * 4 + [0.3] * 3 + [0.8] * 3)] == expected
    y, w, p_max = m(_probs(CONF, LABEL))
    assert y.tolist() == [[LABEL]] and w.dtype == torch.float32
    torch.testing.assert_close(p_max, torch.tensor([[CONF]]))
    assert w.tolist() == [[expected]]
    torch.testing.assert_close(m.last_threshold, torch.tensor([0.4, 0.3, 0.8]))
    torch.testing.assert_close(m.last_keep_rate, torch.tensor([2 / 4, 1 / 3, 2 / 3]))
    # eval mode: the buffers are only read
    assert m.num_steps.item() == 0 and m.count.tolist() == [0, 0, 0]
    # the max-prob uncertainty: u = 1 - p_max
    m2 = _cdm(uncertainty="maxprob").eval()
    m2.mu.fill_(0.12)
    m2.sigma.fill_(0.0)  # keep 1 - p_max <= 0.12: p_max 0.99, 0.9, 0.95, 0.98
    assert m2(_probs(CONF, LABEL))[1].tolist() == [[[1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]]]


def test_floor_keeps_the_most_certain_fifth_of_each_class_per_image() -> None:
    m = _cdm(floor=0.2).eval()
    m.mu.fill_(-1.0)
    m.sigma.fill_(0.0)  # t_c = -1: the threshold rejects every pixel, only the floor keeps
    conf = torch.linspace(0.5, 0.95, 10).tolist() + [0.9, 0.6, 0.7] + [0.7] * 2 + [0.8] * 3
    label = [0] * 10 + [1] * 3 + [2] * 5
    _, w, _ = m(_probs(conf, label))
    w = w.view(-1)
    assert w[:10].tolist() == [0.0] * 8 + [1.0] * 2  # ceil(0.2*10) = 2 most confident
    assert w[10:13].tolist() == [1.0, 0.0, 0.0]  # ceil(0.2*3) = 1
    assert w[13:].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]  # 1 kept, plus its ties
    # per image: each image keeps its own top 20 % of the class; margins are excluded
    probs = torch.cat([_probs(conf[:10], [0] * 10), _probs(conf[:10][::-1], [0] * 10)])
    _, w2, _ = m(probs)
    assert w2[0, 0].tolist() == [0.0] * 8 + [1.0] * 2 and w2[1, 0].tolist() == [1.0] * 2 + [0.0] * 8
    valid = torch.ones(2, 1, 10)
    valid[0, 0, 9] = 0  # the most certain pixel of image 0 is outside the crop
    _, w3, _ = m(probs, valid)
    assert w3[0, 0].tolist() == [0.0] * 7 + [1.0, 1.0, 0.0]
    # 15 pixels: ceil(0.2 * 15) = 3 despite 0.2 * 15 = 3.0000000000000004
    _, w4, _ = m(_probs(torch.linspace(0.5, 0.95, 15), [0] * 15))
    assert w4.sum().item() == 3


def test_soft_weights() -> None:
    m = _cdm(soft=True).eval()
    m.mu.copy_(torch.tensor([0.3, 0.1, 0.5]))
    m.sigma.copy_(torch.tensor([0.2, 0.4, 0.6]))
    _, w, _ = m(_probs(CONF, LABEL))
    t = [0.4] * 4 + [0.3] * 3 + [0.8] * 3
    s = [0.2] * 4 + [0.4] * 3 + [0.6] * 3
    expected = [1.0 if _u(a) <= tc else math.exp(-(_u(a) - tc) / sc) for a, tc, sc in zip(CONF, t, s)]
    torch.testing.assert_close(w.view(-1), torch.tensor(expected))
    assert 0 < w.min() < 1 and w.max() == 1


def test_warmup_returns_the_dacs_scalar_weight() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(4 * torch.randn(2, 3, 16, 8, generator=g), dim=1)
    valid = (torch.rand(2, 16, 8, generator=g) > 0.2).to(torch.uint8)
    m = ClassDecoupledPseudoLabeler(num_classes=3, warmup_steps=3, ignore_top=2, ignore_bottom=3)
    dacs = PseudoLabeler(threshold=0.968, ignore_top=2, ignore_bottom=3)
    _, w_ref, _ = dacs(probs, valid)
    for step in range(3):  # step=None: the internal counter of training calls
        y, w, _ = m(probs, valid)
        assert torch.equal(w, w_ref), step
    assert m.num_steps.item() == 3 and m.count.sum() > 0  # statistics are updated during the warm-up
    _, w, _ = m(probs, valid)  # step 3: CDM's per-pixel weight
    assert not torch.equal(w, w_ref) and set(w.unique().tolist()) <= {0.0, 1.0}
    assert w[:, :2].sum() == 0 and w[:, -3:].sum() == 0 and w[valid == 0].sum() == 0
    _, w_explicit, _ = m.eval()(probs, valid, step=2)
    assert torch.equal(w_explicit, w_ref)


@pytest.mark.parametrize("first_batch_init", [False, True])
def test_running_statistics_momentum_present_classes_only(first_batch_init) -> None:
    m = ClassDecoupledPseudoLabeler(
        num_classes=4, warmup_steps=0, ignore_top=1, first_batch_init=first_batch_init
    )
    conf = torch.tensor([[0.9, 0.9, 0.9], [0.99, 0.9, 0.8], [0.7, 0.6, 0.6]])  # row 0 in the margin
    label = torch.tensor([[3, 3, 3], [0, 0, 2], [2, 2, 2]])
    p = ((1 - conf) / 3).unsqueeze(0).unsqueeze(0).repeat(1, 4, 1, 1)
    p = p.scatter(1, label.view(1, 1, 3, 3), conf.view(1, 1, 3, 3))
    m(p)
    u = m.entropy(p)[0]
    u0 = u[1, :2]
    u2 = torch.stack([u[1, 2], u[2, 0], u[2, 1], u[2, 2]])
    mean = torch.stack([u0.mean(), u2.mean()])
    sd = torch.stack([u0.std(unbiased=False), u2.std(unbiased=False)])
    if first_batch_init:  # a class's first batch sets its statistics
        mu_exp, sigma_exp = mean, sd
    else:  # the design's plain EMA from mu = 0, sigma = 1
        mu_exp, sigma_exp = 0.01 * mean, 0.99 + 0.01 * sd
    torch.testing.assert_close(
        m.mu, torch.stack([mu_exp[0], torch.tensor(0.0), mu_exp[1], torch.tensor(0.0)])
    )
    torch.testing.assert_close(
        m.sigma, torch.stack([sigma_exp[0], torch.tensor(1.0), sigma_exp[1], torch.tensor(1.0)])
    )
    assert m.count.tolist() == [1, 0, 1, 0]  # class 3 lives only in the margin row: not present
    mu1, sigma1 = m.mu.clone(), m.sigma.clone()
    m(p)  # second batch: momentum 0.99 for the present classes, absent ones untouched
    torch.testing.assert_close(m.mu[[0, 2]], 0.99 * mu1[[0, 2]] + 0.01 * mean)
    torch.testing.assert_close(m.sigma[[0, 2]], 0.99 * sigma1[[0, 2]] + 0.01 * sd)
    assert m.mu[[1, 3]].tolist() == [0.0, 0.0] and m.sigma[[1, 3]].tolist() == [1.0, 1.0]
    assert m.count.tolist() == [2, 0, 2, 0] and m.num_steps.item() == 2


def _random_probs(seed: int, b: int = 2, c: int = 5) -> torch.Tensor:
    return torch.softmax(3 * torch.randn(b, c, 12, 10, generator=torch.Generator().manual_seed(seed)), dim=1)


@pytest.mark.parametrize("variant", ["entropy", "freematch", "cbst"])
def test_state_dict_round_trip(variant) -> None:
    kw = {"num_classes": 5, "warmup_steps": 2, "variant": variant, "cbst_ramp_steps": 10}
    a = ClassDecoupledPseudoLabeler(**kw)
    for s in range(4):
        a(_random_probs(s))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = ClassDecoupledPseudoLabeler(**kw)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.num_steps.item() == 4
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    fresh = ClassDecoupledPseudoLabeler(**kw)
    probs = _random_probs(10)
    wa, wb, wf = a(probs)[1], b(probs)[1], fresh(probs)[1]  # train mode: updates then weights
    assert torch.equal(wa, wb) and not torch.equal(wa, wf)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_ddp_statistics_are_all_reduced_before_the_ema(monkeypatch) -> None:
    """Two ranks with sum-all-reduced batch sums keep the buffers of one process seeing both batches."""
    p1, p2 = _random_probs(1), _random_probs(2)
    p1[:, 4] = 0.0  # class 4 is present on "rank 1" only: its statistics must still update on rank 0
    captured: list[torch.Tensor] = []
    monkeypatch.setattr(cdm_mod.dist, "is_initialized", lambda: True)
    for variant in ("entropy", "freematch"):
        captured.clear()
        monkeypatch.setattr(cdm_mod.dist, "all_reduce", lambda t, op=None: captured.append(t.clone()))
        ClassDecoupledPseudoLabeler(num_classes=5, variant=variant)(p2)  # "rank 1" sums
        other = captured[0]
        monkeypatch.setattr(cdm_mod.dist, "all_reduce", lambda t, op=None, o=other: t.add_(o))
        rank0 = ClassDecoupledPseudoLabeler(num_classes=5, variant=variant)
        rank0(p1)
        monkeypatch.setattr(cdm_mod.dist, "is_initialized", lambda: False)
        single = ClassDecoupledPseudoLabeler(num_classes=5, variant=variant)
        single(torch.cat([p1, p2]))
        monkeypatch.setattr(cdm_mod.dist, "is_initialized", lambda: True)
        assert single.count[4] == 1
        for k, v in single.state_dict().items():
            torch.testing.assert_close(rank0.state_dict()[k], v, msg=f"{variant} {k}")


def test_freematch_thresholds_and_update() -> None:
    m = _cdm(variant="freematch").eval()
    m.tau.fill_(0.8)
    m.p_class.copy_(torch.tensor([0.5, 0.25, 0.25]))  # tau_c = 0.8 * (1, 0.5, 0.5)
    conf, label = [0.85, 0.75, 0.45, 0.39, 0.41, 0.4], [0, 0, 1, 1, 2, 2]
    _, w, _ = m(_probs(conf, label))
    assert w.view(-1).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    torch.testing.assert_close(m.last_threshold, torch.tensor([0.8, 0.4, 0.4]))
    m.train()
    probs = _probs(conf, label)
    m(probs)
    torch.testing.assert_close(m.tau, torch.tensor(0.999 * 0.8 + 0.001 * sum(conf) / 6))
    mean_pc = probs.mean(dim=(0, 2, 3))
    torch.testing.assert_close(m.p_class, 0.999 * torch.tensor([0.5, 0.25, 0.25]) + 0.001 * mean_pc)
    fresh = _cdm(variant="freematch")
    torch.testing.assert_close(fresh.tau, torch.tensor(1 / 3))  # FreeMatch init 1/C
    with pytest.raises(ValueError):
        _cdm(variant="freematch", soft=True)


def test_cbst_class_percentiles_and_ramp() -> None:
    m = _cdm(variant="cbst", momentum=0.0, cbst_ramp_steps=100)
    assert [m.cbst_portion(s) for s in (0, 50, 100, 400)] == pytest.approx([0.2, 0.35, 0.5, 0.5])
    conf = [0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.9] + [0.8, 0.7, 0.6]
    label = [0] * 10 + [1] * 3
    _, w, _ = m(_probs(conf, label), step=0)  # p = 0.2: rank floor(2) -> 0.97; class 1: rank 0 -> 0.8
    torch.testing.assert_close(m.cbst_threshold, torch.tensor([0.97, 0.8, 0.0]))
    assert w.view(-1).tolist() == [1.0] * 3 + [0.0] * 7 + [1.0, 0.0, 0.0]
    _, w, _ = m(_probs(conf, label), step=100)  # p = 0.5: rank 5 -> 0.94; class 1: rank 1 -> 0.7
    torch.testing.assert_close(m.cbst_threshold, torch.tensor([0.94, 0.7, 0.0]))
    assert w.view(-1).tolist() == [1.0] * 6 + [0.0] * 4 + [1.0, 1.0, 0.0]
    m2 = _cdm(variant="cbst", momentum=0.99, first_batch_init=False)
    m2(_probs(conf, label), step=0)
    torch.testing.assert_close(m2.cbst_threshold, torch.tensor([0.0097, 0.008, 0.0]))  # EMA from 0
    m3 = _cdm(variant="cbst", momentum=0.99, cbst_ramp_steps=100)  # first batch sets k_c, then the EMA
    m3(_probs(conf, label), step=0)
    torch.testing.assert_close(m3.cbst_threshold, torch.tensor([0.97, 0.8, 0.0]))
    m3(_probs(conf, label), step=100)
    torch.testing.assert_close(
        m3.cbst_threshold, torch.tensor([0.99 * 0.97 + 0.01 * 0.94, 0.99 * 0.8 + 0.01 * 0.7, 0])
    )
