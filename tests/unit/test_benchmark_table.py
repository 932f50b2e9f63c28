"""A run's mIoU next to the README table's rows of its setting (src/utils/benchmark_table.py)."""

from __future__ import annotations

from src.utils.benchmark_table import reference_lines

HEADER = "method,data,model,steps,n_seeds,mIoU_mean,mIoU_std\n"


def test_lines_name_source_only_own_method_and_oracle(tmp_path):
    (tmp_path / "t.csv").write_text(
        HEADER
        + "source_only,synthetic,daformer_mitb0,1000,3,20.27,0.25\n"
        + "mic,synthetic,daformer_mitb0,1000,3,40.0,1.0\n"
        + "oracle,synthetic,daformer_mitb0,1000,3,50.0,0.5\n"
        + "source_only,synthetic,daformer_mitb0,500,3,10.0,0.1\n"  # another setting: not used
    )
    lines = reference_lines(
        tmp_path, method="mic", data="synthetic", model="daformer_mitb0", steps=1000, miou=41.23
    )
    assert lines[0] == "target mIoU of this run (mic): 41.2"
    assert "source only on this setting: 20.3 ± 0.2 (3 seeds, results/t.csv)" in lines[1]
    assert "mic in the table: 40.0 ± 1.0" in lines[2] and "oracle" in lines[3]


def test_no_matching_table_prints_nothing(tmp_path):
    (tmp_path / "t.csv").write_text(HEADER + "source_only,folder,daformer_mitb0,1000,3,20.0,0.2\n")
    assert (
        reference_lines(tmp_path, method="mic", data="synthetic", model="daformer_mitb0", steps=1000, miou=1)
        == []
    )
    (tmp_path / "broken.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert (
        reference_lines(tmp_path, method="mic", data="synthetic", model="daformer_mitb0", steps=1000, miou=1)
        == []
    )


def test_row_without_a_number_is_left_out_with_a_warning(tmp_path, caplog):
    # aggregate_results.py writes an empty mean when every seed failed; a finished run must not crash on it
    (tmp_path / "t.csv").write_text(
        HEADER
        + "source_only,synthetic,daformer_mitb0,1000,3,20.0,\n"
        + "mic,synthetic,daformer_mitb0,1000,0,,\n"
    )
    (tmp_path / "u.csv").write_text("method,data,model,steps\nsource_only,synthetic,daformer_mitb0,1000\n")
    with caplog.at_level("WARNING"):
        lines = reference_lines(tmp_path, method="mic", data="synthetic", model="daformer_mitb0", steps=1000,
                                miou=25.0)  # fmt: skip
    assert lines == ["target mIoU of this run (mic): 25.0",
                     "  source only on this setting: 20.0 (3 seeds, results/t.csv)"]  # fmt: skip
    assert "t.csv: row mic has no mIoU_mean number" in caplog.text
    assert "u.csv: row source_only has no mIoU_mean number" in caplog.text


def test_video_baseline_and_own_row_from_the_same_table(tmp_path):
    video = "tps,synthetic_video,accel_daformer_mitb0,1000,1,{}\n"
    (tmp_path / "a_variant.csv").write_text(HEADER + video.format("9.0,"))
    baseline = "source_only_video,synthetic_video,accel_daformer_mitb0,1000,3,21.0,0.1\n"
    (tmp_path / "b_main.csv").write_text(HEADER + baseline + video.format("30.0,"))
    lines = reference_lines(tmp_path, method="tps", data="synthetic_video", model="accel_daformer_mitb0",
                            steps=1000, miou=29.0)  # fmt: skip
    assert "source only on this setting: 21.0 ± 0.1 (3 seeds, results/b_main.csv)" in lines[1]
    assert lines[2] == "  tps in the table: 30.0 (1 seeds, results/b_main.csv)"
