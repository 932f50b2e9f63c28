"""scripts/aggregate_results.py: mean ± std over seeds, grouping, markdown and CSV."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        "aggregate_results", ROOT / "scripts" / "aggregate_results.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(d: Path, method: str, seed: int, miou: float, road: float | None):
    d.mkdir(parents=True)
    r = {"mIoU": miou, "per_class": {"road": road, "sky": 50.0}, "subsets": {"19": miou}, "method": method,
         "data": "synthetic", "model": "daformer_mitb0", "seed": seed, "steps": 100}  # fmt: skip
    (d / "results.json").write_text(json.dumps(r))


def test_mean_std_over_seeds(tmp_path):
    agg = _load()
    for i, (m, v) in enumerate([("dacs", 40.0), ("dacs", 44.0), ("dacs", 42.0), ("source_only", 30.0)]):
        _write(tmp_path / str(i), m, i, v, None if i == 0 else v)
    rows = {r["method"]: r for r in agg.aggregate(agg.load_results([tmp_path]))}
    mean, std, n = rows["dacs"]["mIoU"]
    assert (mean, n) == (42.0, 3) and std == pytest.approx(2.0)
    assert rows["dacs"]["per_class"]["road"][2] == 2  # a null IoU is skipped, not counted as 0
    assert rows["source_only"]["mIoU"][1] is None  # one seed: no spread, shown as the value alone
    md = agg.to_markdown(list(rows.values()), per_class=True)
    assert "42.0 ± 2.0" in md and "road" in md.splitlines()[0]
    assert "| 30.0 |" in md and "30.0 ±" not in md
    assert agg.main([str(tmp_path), "--out", str(tmp_path / "table")]) == 0
    assert (tmp_path / "table.csv").read_text().count("\n") == 3


def test_clear_errors(tmp_path):
    agg = _load()
    with pytest.raises(FileNotFoundError, match="no results.json"):
        agg.load_results([tmp_path])
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="lacks"):
        agg.load_results([tmp_path])


def test_gap_closed_against_the_settings_source_only_and_oracle_and_names_keep_their_dots(tmp_path):
    agg = _load()
    for i, (m, v) in enumerate([("source_only", 20.0), ("oracle", 50.0), ("dacs", 35.0), ("dacs", 41.0)]):
        _write(tmp_path / "runs" / str(i), m, i, v, v)
    rows = {r["method"]: r for r in agg.aggregate(agg.load_results([tmp_path / "runs"]))}
    assert rows["dacs"]["gap_closed"] == pytest.approx(60.0)  # (38 - 20) / (50 - 20), on the seeds' means
    assert (rows["source_only"]["gap_closed"], rows["oracle"]["gap_closed"]) == (0.0, 100.0)
    assert agg.main([str(tmp_path / "runs"), "--out", str(tmp_path / "lr2.4e-3")]) == 0
    md = (tmp_path / "lr2.4e-3.md").read_text()
    assert md.splitlines()[0].rstrip(" |").endswith("gap closed") and "| 60 % |" in md
    assert (tmp_path / "lr2.4e-3.csv").read_text().splitlines()[0].endswith("gap_closed")
    # without both ends of the gap no row gets the column
    only = [r for r in rows.values() if r["method"] != "oracle"]
    for r in only:
        r["gap_closed"] = None
    assert "gap closed" not in agg.to_markdown(only, per_class=False)


def test_class_groups_and_the_rarest_thing_classes_of_a_label_folder(tmp_path):
    import numpy as np
    from PIL import Image

    agg = _load()
    classes = ["road", "sky", "car", "bus", "train"]  # car, bus, train have instances; road, sky do not
    for seed, ious in enumerate([(90, 80, 50, 10, 30), (80, 80, 40, None, 20)]):
        d = tmp_path / "runs" / str(seed)
        d.mkdir(parents=True)
        r = {"mIoU": 50.0, "per_class": dict(zip(classes, ious)), "method": "mic", "data": "synthetic",
             "model": "daformer_mitb0", "seed": seed, "steps": 100}  # fmt: skip
        (d / "results.json").write_text(json.dumps(r))
    labels = tmp_path / "labels"
    labels.mkdir()
    # pixels: road 40, sky 30, car 20, train 6, bus 3, ignored 1 -> the two rarest things: bus, train
    y = np.array([0] * 40 + [1] * 30 + [2] * 20 + [4] * 6 + [3] * 3 + [255], dtype=np.uint8).reshape(10, 10)
    Image.fromarray(y).save(labels / "0.png")
    names, shares = agg.rarest_classes(labels, classes, 2, agg.class_names("instances"))
    assert names == ["bus", "train"] and shares == pytest.approx([3 / 99, 6 / 99])
    assert agg.rarest_classes(labels, classes, 1)[0] == ["bus"]  # among all classes
    out = tmp_path / "table"
    argv = [str(tmp_path / "runs"), "--rare", "2", "--source-labels", str(labels), "--out", str(out)]
    assert agg.main([*argv, "--group", "vehicles=car,bus", "--group", "rare things=bus,train"]) == 0
    md = (tmp_path / "table.md").read_text()
    assert "rare 2: bus 3.03 %, train 6.06 %" in md and "vehicles = mean IoU over car, bus" in md
    assert "rare things = mean IoU over bus, train" in md
    # per run: seed 0 (10 + 30) / 2 = 20, seed 1 bus absent -> 20 alone; vehicles (50 + 10) / 2 = 30 and 40
    assert "| 20.0 ± 0.0 |" in md and "| 35.0 ± 7.1 |" in md
    assert "rare 2_mean" in (tmp_path / "table.csv").read_text().splitlines()[0]
    with pytest.raises(SystemExit):  # unknown class: a one-line argparse error, not a traceback
        agg.main([str(tmp_path / "runs"), "--group", "x=bike"])
    with pytest.raises(SystemExit):
        agg.main([str(tmp_path / "runs"), "--rare", "2", "--source-labels", str(tmp_path / "none")])


def test_update_replaces_one_row_of_an_existing_table_and_keeps_the_others(tmp_path):
    agg = _load()
    for i, (m, v) in enumerate([("source_only", 20.0), ("omuda", 30.0), ("mic", 33.0)]):
        _write(tmp_path / "old" / str(i), m, 0, v, v)
    table = tmp_path / "table"
    assert agg.main([str(tmp_path / "old"), "--out", str(table), "--per-class"]) == 0
    for seed, v in enumerate([40.0, 42.0]):  # OMUDA re-run, two seeds
        _write(tmp_path / "new" / str(seed), "omuda", seed, v, v)
    assert agg.main([str(tmp_path / "new"), "--update", str(table), "--per-class"]) == 0
    md = (tmp_path / "table.md").read_text().splitlines()
    rows = [x for x in md if x.startswith("| ") and not x.startswith("| method")]
    assert [r.split("|")[1].strip() for r in rows] == ["source_only", "omuda", "mic"]  # in place
    assert "41.0 ± 1.4" in rows[1] and "| 20.0 |" in rows[0] and "| 33.0 |" in rows[2]
    lines = (tmp_path / "table.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[2].startswith("omuda,synthetic,daformer_mitb0,100,2,41.0")
    with pytest.raises(SystemExit):  # other columns (no per-class): the whole table must be re-made
        agg.main([str(tmp_path / "new"), "--update", str(table)])
    with pytest.raises(SystemExit):
        agg.main([str(tmp_path / "new"), "--update", str(tmp_path / "missing")])


def test_table_mode_gives_the_group_columns_of_an_existing_tables_rows(tmp_path, capsys):
    agg = _load()
    for seed, (road, sky) in enumerate([(60.0, 20.0), (80.0, 40.0)]):
        d = tmp_path / "runs" / str(seed)
        d.mkdir(parents=True)
        r = {"mIoU": 50.0, "per_class": {"road": road, "sky": sky}, "method": "mic", "data": "synthetic",
             "model": "daformer_mitb0", "seed": seed, "steps": 100}  # fmt: skip
        (d / "results.json").write_text(json.dumps(r))
    assert agg.main([str(tmp_path / "runs"), "--out", str(tmp_path / "t"), "--group", "both=road,sky"]) == 0
    from_runs = (tmp_path / "t.md").read_text()
    capsys.readouterr()
    assert agg.main(["--table", str(tmp_path / "t.csv"), "--group", "both=road,sky"]) == 0
    out = capsys.readouterr().out
    # the table's per-class means (70, 30) give the runs' group mean (50) when no seed lacks a class
    assert (
        "| mic | synthetic | daformer_mitb0 | 100 | 2 | 50.0 | 50.0 |" in out
        and "| 50.0 ± 14.1 |" in from_runs
    )
    with pytest.raises(SystemExit):  # run dirs and --table together
        agg.main([str(tmp_path / "runs"), "--table", str(tmp_path / "t.csv"), "--group", "both=road,sky"])
    with pytest.raises(SystemExit):
        agg.main(["--table", str(tmp_path / "t.csv"), "--group", "x=bike"])


def test_rename_puts_runs_named_apart_into_one_row_and_a_seed_counts_once(tmp_path):
    agg = _load()
    _write(tmp_path / "old" / "0", "omuda_cam_beta2", 0, 30.0, 1.0)
    _write(tmp_path / "old" / "1", "omuda_cam_beta2", 1, 32.0, 1.0)
    _write(tmp_path / "new" / "3", "omuda", 3, 34.0, 1.0)
    rows = agg.aggregate(agg.rename_methods(agg.load_results([tmp_path]), ["omuda_cam_beta2=omuda"]))
    assert [(r["method"], r["seeds"], r["mIoU"][0]) for r in rows] == [("omuda", [0, 1, 3], 32.0)]
    with pytest.raises(ValueError, match="no run has method 'omud'"):
        agg.rename_methods(agg.load_results([tmp_path]), ["omud=omuda"])
    with pytest.raises(ValueError, match="write OLD=NEW"):
        agg.rename_methods(agg.load_results([tmp_path]), ["omuda"])
    _write(tmp_path / "new" / "0", "omuda", 0, 31.0, 1.0)  # seed 0 again, under the new name
    with pytest.raises(ValueError, match="seed 0 of omuda twice"):
        agg.aggregate(agg.rename_methods(agg.load_results([tmp_path]), ["omuda_cam_beta2=omuda"]))
    with pytest.raises(SystemExit):  # the command line: one line naming the option, exit 2
        agg.main([str(tmp_path), "--rename", "omuda_cam_beta2=omuda"])
