"""CDM as revised in issue 17 (src/uda/cdm.py): it never adds weight to the host's, its statistics start
after the warm-up, rare classes lean on pooled statistics, unreliable classes weigh less, and a ramp."""

from __future__ import annotations

import pytest
import torch

from src.uda.cdm import ClassDecoupledPseudoLabeler


def _probs(
    seed: int = 0, b: int = 2, c: int = 5, h: int = 16, w: int = 16, sharp: float = 4.0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharp * torch.randn(b, c, h, w, generator=g), dim=1)


def _cdm(**kw) -> ClassDecoupledPseudoLabeler:
    base = dict(num_classes=5, warmup_steps=0, floor=0.0, threshold=0.9)
    base.update(kw)
    return ClassDecoupledPseudoLabeler(**base).train()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_budget_host_never_exceeds_the_hosts_total_and_remove_never_a_pixel(seed):
    p = _probs(seed)
    host = _cdm(budget="free").dacs(p)[1]
    for step in range(3):
        _, w_host_budget, _ = _cdm(budget="host")(p, step=step)
        _, w_remove, _ = _cdm(budget="remove")(p, step=step)
        assert w_host_budget.sum() <= host.sum() + 1e-4 and w_host_budget.max() <= 1.0
        assert (w_remove <= host + 1e-6).all()
    _, w_free, _ = _cdm(budget="free")(p, step=0)
    assert w_free.sum() > host.sum()  # the first design added weight: what the budget prevents


def test_statistics_start_after_the_warm_up():
    cdm = _cdm(warmup_steps=3, stats_after_warmup=True)
    p = _probs()
    for t in range(3):
        _, w, _ = cdm(p, step=t)
        assert torch.equal(w, cdm.dacs(p)[1])  # the host's weight during the warm-up
    assert int(cdm.count.sum()) == 0  # nothing learned from the warm-up's teacher
    cdm(p, step=3)
    assert int(cdm.count.sum()) > 0


def test_shrinkage_pulls_a_rarely_seen_class_toward_the_pooled_statistics():
    cdm = _cdm(shrinkage=10.0)
    cdm(_probs(), step=0)
    plain = cdm.mu + cdm.kappa * cdm.sigma
    shrunk = cdm.class_thresholds()
    seen = cdm.count > 0
    pooled = cdm.mu_all + cdm.kappa * cdm.sigma_all
    # after one batch (n = 1 of k = 10) every seen class is ~10/11 of the way to the pooled threshold
    expected = (plain + 10 * pooled) / 11
    assert torch.allclose(shrunk[seen], expected[seen].float(), atol=1e-5)


def test_reliability_weighs_an_unsure_class_less():
    c, h, w = 3, 8, 8
    logits = torch.zeros(1, c, h, w)
    logits[:, 0, :, :4] = 6.0  # class 0: confident
    logits[:, 1, :, 4:] = 1.0  # class 1: unsure (p_max ~ 0.58)
    p = torch.softmax(logits, 1)
    y, w, _ = _cdm(num_classes=c, reliability=True, budget="free", kappa=10.0)(p, step=0)
    assert (y[:, :, :4] == 0).all() and (y[:, :, 4:] == 1).all()
    assert w[:, :, :4].mean() == pytest.approx(1.0) and w[:, :, 4:].mean() < 0.7


def test_ramp_goes_from_the_hosts_weight_to_cdms():
    p = _probs()
    cdm = _cdm(warmup_steps=2, ramp_steps=4, budget="free")
    host = cdm.dacs(p)[1]
    w_end = _cdm(warmup_steps=0, budget="free")(p, step=0)[1]
    w2 = cdm(p, step=2)[1]  # first step after the warm-up: 1/4 of the way
    assert torch.allclose(w2, 0.75 * host + 0.25 * w_end, atol=1e-5)
    assert torch.allclose(cdm(p, step=10)[1], w_end, atol=1e-5)


def test_logged_keep_rate_is_of_the_applied_weight():
    p = _probs()
    cdm = _cdm(warmup_steps=5)
    cdm(p, step=0)
    host_kept = (cdm.dacs(p)[1] > 0).float().mean()
    assert torch.nanmean(cdm.last_keep_rate) == pytest.approx(float(host_kept), abs=1e-6)


def test_bad_options_name_themselves():
    with pytest.raises(ValueError, match="budget"):
        _cdm(budget="more")
    with pytest.raises(ValueError, match="ramp_steps"):
        _cdm(ramp_steps=-1)
