"""Time to quality from an evaluation report: the quick FIDs against the real-vs-real floor, and the first one within
k x the floor (what `compare` plots and tests/benchmarks/time_to_quality.py tabulates)."""

from pathlib import Path

from PIL import Image

from gan.images import save_time_to_quality
from pipelines.compare import first_within, quality_curve

# A report as the evaluation writes it, cut to what time to quality reads: the floor 0.8 and four quick FIDs.
REPORT = {
    "real_vs_real": {"fid": 0.8},
    "quick_fid": [
        {"epoch": 2, "step": 124, "seconds": 25.0, "unix": 1000.0, "fid": 12.0},  # 15x
        {"epoch": 4, "step": 248, "seconds": 50.0, "unix": 1030.0, "fid": 4.0},  # 5x: on the line counts as reached
        {"epoch": 6, "step": 372, "seconds": 75.0, "unix": 1060.0, "fid": 4.4},  # 5.5x: a bump after it changes nothing
        {"epoch": 8, "step": 496, "seconds": 100.0, "unix": 1090.0, "fid": 2.0},  # 2.5x
    ],
}


def test_the_curve_is_each_quick_fid_over_the_floor_in_order() -> None:
    curve = quality_curve(REPORT)
    assert [q["fid_over_floor"] for q in curve] == [12.0 / 0.8, 4.0 / 0.8, 4.4 / 0.8, 2.0 / 0.8]
    assert [{k: v for k, v in q.items() if k != "fid_over_floor"} for q in curve] == REPORT["quick_fid"]  # nothing else changed


def test_the_first_quick_fid_within_k_times_the_floor_or_none() -> None:
    curve = quality_curve(REPORT)
    assert [first_within(curve, k)["step"] if first_within(curve, k) else None for k in (20, 10, 5, 3, 2)] == [124, 248, 248, 496, None]
    assert first_within(curve, 15.0)["seconds"] == 25.0  # exactly k x the floor is within it
    assert first_within([], 10) is None  # a run without quick FIDs never got there


def test_the_plot_takes_several_targets(tmp_path: Path) -> None:
    curve = [{**q, "seconds": q["unix"] - 990.0} for q in quality_curve(REPORT)]
    path = save_time_to_quality({"default": curve, "empty": []}, tmp_path / "ttq.png", targets=(10, 5, 3, 2), xlabel="whole run (s)")
    assert Image.open(path).size[0] > 100
