"""scripts/benchmark.py measures image and video steps (stage times, memory) and says when it cannot."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import ROOT


def _benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY = ["--crop", "32", "--batch", "1", "--steps", "2", "--warmup", "1", "--no-data", "--no-slide"]
#: the synthetic experiments start from the offline stand-in (minutes of pre-training): not in the suite
NO_STAND_IN = ["model.pretrained=null"]


@pytest.mark.parametrize(
    "experiment, overrides, stages",
    [
        (
            "mic_synthetic",
            NO_STAND_IN,
            {"source_fwd_bwd", "teacher_fwd", "mix", "mask", "mask_fwd_bwd", "optimizer"},
        ),
        (
            "udass_synthetic_video",
            [*NO_STAND_IN, "uda.tps_start=0", "uda.mix.quadmix_start=1", "uda.mix.rare_paster=null"],
            {"source_fwd", "teacher_fwd", "tps_fwd", "mmd", "mix", "mix_fwd_bwd", "optimizer"},
        ),  # fmt: skip
    ],
)
def test_benchmark_times_the_stages_of_image_and_video_steps(tmp_path, experiment, overrides, stages):
    out = tmp_path / "bench.json"
    argv = ["--experiment", experiment, *TINY, "--json", str(out)]
    assert _benchmark().main(argv + (["--override", *overrides] if overrides else [])) == 0
    res = json.loads(out.read_text())
    step = res["step"]
    assert res["experiment"] == experiment and stages <= set(step["stages_s"])
    assert step["step_s"] > 0 and abs(step["steps_per_s"] * step["step_s"] - 1) < 1e-9
    assert 0 < step["strategy_share"] < 1
    assert 0 <= step["peak_rss_above_start_gb"] <= step["peak_rss_gb"]


def test_benchmark_refuses_the_data_rate_of_video_clips():
    with pytest.raises(SystemExit, match="--no-data"):
        _benchmark().main(["--experiment", "udass_synthetic_video", "--no-step", "--no-slide"])
