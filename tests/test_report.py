"""hmnist report on small results files written by hand, numbers worked out.

The cells: at batch 10, [784,30,10], float64, seconds per epoch

    loop 1t 10,  matmul 1t 2, matmul 2t 1.25,  numba 1t 1, numba 2t 0.6

so matmul 2t is 8x loop, numba 2t 16.67x loop and 3.33x matmul; two
thread counts fit Amdahl exactly: matmul P = 0.75, numba P = 0.8.
"""

import csv
import json
import math
import sys

import pytest

SAMPLES = 6000
# Plots are tested once; the rest need only the tables.
REPORT = ["report", "--no-plots"]


def cell(kernel, threads, seconds_per_epoch, batch_size=10, accuracy=0.5):
    """Return a results record as ``hmnist bench`` writes it."""
    numba = kernel == "numba"
    median = seconds_per_epoch * SAMPLES / 60_000
    flops = 4 * 784 * 30 + 6 * 30 * 10
    return {
        "kernel": kernel, "pool": "numba" if numba else "blas",
        "threads": threads, "blas_threads": 1 if numba else threads,
        "numba_threads": threads if numba else None, "apart": False,
        "batch_size": batch_size, "sizes": [784, 30, 10], "dtype": "float64",
        "oversubscribed": False, "samples": SAMPLES, "warmup_seconds": 0.1,
        "repeat_seconds": [median * 0.98, median, median * 1.02],
        "test_correct": int(accuracy * 10_000), "test_total": 10_000,
        "test_accuracy": accuracy, "threadpool_info": [], "kernel_info": {},
        "median_seconds": median, "iqr_seconds": median * 0.02,
        "samples_per_second": SAMPLES / median,
        "seconds_per_epoch": seconds_per_epoch,
        "iqr_seconds_per_epoch": seconds_per_epoch * 0.02,
        "flops_per_sample": flops, "gflops": flops * SAMPLES / median / 1e9,
        "peak_gflops": 10.0, "fraction_of_peak": flops * SAMPLES / median / 1e10,
    }  # fmt: skip


def document(cells, cpu="Test CPU"):
    """Return a bench results document holding ``cells``."""
    return {
        "format_version": 1, "command": "bench",
        "machine": {"cpu": cpu, "cores": 2, "threadpool_info": []},
        "commit": "abc", "started": "2026-01-01T00:00:00", "options": {},
        "peaks": [{"dtype": "float64", "threads": 1, "gflops": 10.0}],
        "cells": cells,
    }  # fmt: skip


CELLS = [
    cell("loop", 1, 10.0),
    cell("matmul", 1, 2.0),
    cell("matmul", 2, 1.25),
    cell("numba", 1, 1.0),
    cell("numba", 2, 0.6),
]


def write(path, content):
    """Write ``content`` (a dict as JSON, or text) to ``path``; return it."""
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def read_csv(path):
    """Return the rows of a CSV file as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(text):
    """Return a CSV field as a float, None when empty."""
    return float(text) if text else None


@pytest.fixture
def results(tmp_path):
    """Return the path of the hand-written results file."""
    return write(tmp_path / "hand.json", document(CELLS))


def test_speedup_table(results, run_hmnist):
    code, out, err = run_hmnist([*REPORT, str(results)])
    assert code == 0, err
    rows = read_csv(results.parent / "hand-speedup.csv")
    by_cell = {(r["kernel"], r["threads"]): r for r in rows}
    expected = {
        ("loop", "1"): (1.0, 0.2),
        ("matmul", "1"): (5.0, 1.0),
        ("matmul", "2"): (8.0, 1.6),
        ("numba", "1"): (10.0, 2.0),
        ("numba", "2"): (10 / 0.6, 2 / 0.6),
    }
    for key, (over_loop, over_matmul) in expected.items():
        row = by_cell[key]
        assert number(row["speedup_over_loop"]) == pytest.approx(over_loop)
        assert number(row["speedup_over_matmul"]) == pytest.approx(over_matmul)
    assert number(by_cell[("numba", "2")]["samples_per_second"]) == pytest.approx(
        60_000 / 0.6
    )
    geomeans = {r["kernel"]: r for r in rows if r["threads_label"] == "geomean"}
    assert number(geomeans["numba"]["speedup_over_loop"]) == pytest.approx(
        math.sqrt(10 * 10 / 0.6)
    )
    assert number(geomeans["matmul"]["speedup_over_matmul"]) == pytest.approx(
        math.sqrt(1.6)
    )
    # Markdown on stdout and in the report file, rounded.
    assert "| numba | 2t | 10 | 784-30-10 | float64 | 0.6 |" in out
    assert "16.67" in out and "3.33" in out
    assert "16.67" in (results.parent / "hand.md").read_text()


def test_core_round_trip_is_the_slower_of_a_cells_two(tmp_path, run_hmnist):
    far, unknown = cell("numba", 2, 0.6), cell("numba", 1, 1.0)
    far["core_round_trip_ns"] = [81.0, 352.4]
    unknown["core_round_trip_ns"] = [None, None]
    path = write(
        tmp_path / "trips.json", document([cell("loop", 1, 10.0), far, unknown])
    )
    code, out, err = run_hmnist([*REPORT, str(path)])
    assert code == 0, err
    rows = read_csv(tmp_path / "trips-speedup.csv")
    by_threads = {(r["kernel"], r["threads"]): r["round_trip_ns"] for r in rows}
    assert by_threads[("numba", "2")] == "352.4"
    assert by_threads[("numba", "1")] == ""  # the probe could not run
    assert by_threads[("loop", "1")] == ""  # a file from before the probe
    assert "| 352 |" in out


def test_scaling_table(results, run_hmnist):
    assert run_hmnist([*REPORT, str(results)])[0] == 0
    rows = read_csv(results.parent / "hand-scaling.csv")
    by_kernel = {r["kernel"]: r for r in rows}
    matmul, numba, loop = by_kernel["matmul"], by_kernel["numba"], by_kernel["loop"]
    assert number(matmul["speedup"]) == pytest.approx(1.6)
    assert number(matmul["efficiency"]) == pytest.approx(0.8)
    assert number(matmul["amdahl_p"]) == pytest.approx(0.75)
    assert number(numba["amdahl_p"]) == pytest.approx(0.8)
    assert numba["held"] == "blas 1"
    assert "exactly" in matmul["note"]
    assert loop["amdahl_p"] == "" and "one thread count" in loop["note"]


def test_amdahl_over_three_thread_counts(tmp_path, run_hmnist):
    times = {n: 8.0 * (0.1 + 0.9 / n) for n in (1, 2, 4)}
    cells = [cell("numba", n, t) for n, t in times.items()]
    path = write(tmp_path / "three.json", document(cells))
    assert run_hmnist([*REPORT, str(path)])[0] == 0
    rows = read_csv(tmp_path / "three-scaling.csv")
    assert [r["to_threads"] for r in rows] == ["2", "4"]
    for row in rows:
        assert number(row["amdahl_p"]) == pytest.approx(0.9)
        assert number(row["amdahl_t1"]) == pytest.approx(8.0)
        assert row["note"] == ""
    assert number(rows[1]["efficiency"]) == pytest.approx(times[1] / times[4] / 4)


def test_regression_gate(results, tmp_path, run_hmnist):
    slower = [dict(c) for c in CELLS]
    slower[4] = cell("numba", 2, 0.6 * 1.2)  # 20% slower
    new = write(tmp_path / "new.json", document(slower))
    code, out, err = run_hmnist([*REPORT, str(new), "--compare", str(results)])
    assert code == 3
    assert "1 cells are more than 10% slower" in err
    rows = read_csv(tmp_path / "new-compare.csv")
    verdicts = {(r["kernel"], r["threads"]): r["verdict"] for r in rows}
    assert verdicts.pop(("numba", "2")) == "slower"
    assert set(verdicts.values()) == {""}
    ratio = next(r["ratio"] for r in rows if r["verdict"])
    assert number(ratio) == pytest.approx(1.2)
    assert "## Compared with an earlier run" in out

    args = [*REPORT, str(new), "--compare", str(results), "--threshold", "25"]
    assert run_hmnist(args)[0] == 0


def test_files_from_two_machines_give_a_column_each(results, tmp_path, run_hmnist):
    other = [cell(c["kernel"], c["threads"], 2 * c["seconds_per_epoch"]) for c in CELLS]
    other_path = write(tmp_path / "other.json", document(other, cpu="Other CPU"))
    out_dir = tmp_path / "both"
    argv = [*REPORT, str(results), str(other_path), "--out-dir", str(out_dir)]
    assert run_hmnist(argv)[0] == 0
    rows = read_csv(out_dir / "report-machines.csv")
    assert len(rows) == len(CELLS)
    numba = next(r for r in rows if r["kernel"] == "numba" and r["threads"] == "2")
    assert number(numba["machine_0"]) == pytest.approx(0.6)
    assert number(numba["machine_1"]) == pytest.approx(1.2)
    markdown = (out_dir / "report.md").read_text()
    assert "s/epoch Test CPU (2 cores)" in markdown
    assert "s/epoch Other CPU (2 cores)" in markdown


def train_document(cost, accuracies):
    """Return an ``hmnist train --json`` document with these accuracies."""
    return {
        "format_version": 1, "command": "train",
        "config": {"sizes": [784, 30, 10], "cost": cost, "eta": 3.0},
        "epochs": [{"epoch": i, "accuracy": a} for i, a in enumerate(accuracies)],
    }  # fmt: skip


def test_plots(results, tmp_path, run_hmnist):
    pytest.importorskip("matplotlib")
    train = write(tmp_path / "train.json", train_document("quadratic", [0.9, 0.93]))
    code, _, err = run_hmnist(["report", str(results), str(train)])
    assert code == 0, err
    for name in ("scaling", "speedup", "batch", "accuracy"):
        png = tmp_path / f"hand-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """Return ``(width, height)`` in pixels from a PNG's header."""
    header = path.read_bytes()[:24]
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def standard_cells():
    """Return cells shaped like the standard preset's, with made-up times."""
    kernels = ("loop", "matmul", "numba", "torch", "torch-fast", "jax")
    cells = []
    for dtype in ("float64", "float32"):
        for sizes in ([784, 30, 10], [784, 100, 10]):
            for batch_size in (10, 100):
                for i, kernel in enumerate(kernels):
                    for threads in (1, 2):
                        seconds = 10 / (1 + i) / (1 + threads / 4)
                        record = cell(kernel, threads, seconds, batch_size)
                        cells.append({**record, "sizes": sizes, "dtype": dtype})
    return cells


def test_plots_of_the_standard_matrix_fit_a_page(tmp_path, run_hmnist):
    pytest.importorskip("matplotlib")
    path = write(tmp_path / "standard.json", document(standard_cells()))
    code, _, err = run_hmnist(["report", str(path)])
    assert code == 0, err
    for name in ("scaling", "speedup", "batch"):
        width, height = png_size(tmp_path / f"standard-{name}.png")
        assert 800 <= width <= 1800 and height <= 1200, (name, width, height)


def test_plots_share_one_legend_and_kernel_colours(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.colors import same_color
    from matplotlib.figure import Figure

    from hmnist import report

    path = write(tmp_path / "standard.json", document(standard_cells()))
    bench, _ = report.load([path])
    cells = report.gather_cells(bench)
    colours = report.kernel_colours(cells)
    # The registry fixes a kernel's colour, whichever kernels a file holds.
    assert colours["numba"] == report.kernel_colours(CELLS[3:])["numba"]
    assert len({colours[k] for k in ("loop", "jax")}) == 2
    plots = (report._plot_scaling, report._plot_speedups, report._plot_batch)
    for plot in plots:
        figure = plot(Figure, cells)
        assert len(figure.legends) == 1
        assert not any(ax.get_legend() for ax in figure.axes)
    speedup = report._plot_speedups(Figure, cells)
    assert len(speedup.axes) == 4
    for ax in speedup.axes:
        assert len(ax.get_xticklabels()) == 4  # batch 10 and 100, 1 and 2 threads
    batch = report._plot_batch(Figure, cells)
    for line in batch.axes[0].get_lines():
        assert any(same_color(line.get_color(), c) for c in colours.values())
    styles = {line.get_linestyle() for line in batch.axes[0].get_lines()}
    assert styles == {"-", "--"}
    assert len(report._plot_scaling(Figure, cells).axes) == 6


def test_plots_of_a_quick_run(tmp_path, run_hmnist):
    pytest.importorskip("matplotlib")
    cells = [cell("matmul", 1, 2.0), cell("numba", 1, 1.0)]
    path = write(tmp_path / "quick.json", document(cells))
    code, _, err = run_hmnist(["report", str(path)])
    assert code == 0, err
    assert "no scaling plot" in err
    assert not (tmp_path / "quick-scaling.png").exists()
    for name in ("speedup", "batch"):
        assert png_size(tmp_path / f"quick-{name}.png")[0] <= 1000


def test_without_matplotlib_tables_still_build(results, run_hmnist, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    code, _, err = run_hmnist(["report", str(results)])
    assert code == 0
    assert "plots skipped" in err
    assert (results.parent / "hand-speedup.csv").is_file()
    assert not list(results.parent.glob("*.png"))


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"a": 1}', "not an hmnist results file"),
        ("[1, 2]", "not an hmnist results file"),
        ('{"command": "serve", "format_version": 1}', "'serve' file"),
        ({**document(CELLS), "format_version": 99}, "format_version 99"),
        ({**document([{"kernel": "loop"}])}, "damaged bench results"),
        ({**train_document("quadratic", [0.5]), "epochs": [{}]}, "damaged train"),
    ],
    ids=["broken", "empty", "foreign", "list", "serve", "version", "cell", "train"],
)
def test_damaged_or_foreign_file_is_one_line_naming_it(
    tmp_path, run_hmnist, content, problem
):
    path = write(tmp_path / "bad.json", content)
    code, out, err = run_hmnist([*REPORT, str(path)])
    assert code == 1
    assert err.count("\n") == 1
    assert str(path) in err and problem in err
    assert out == ""


def test_train_file_given_as_compare_is_refused(results, tmp_path, run_hmnist):
    train = write(tmp_path / "train.json", train_document("quadratic", [0.9]))
    code, _, err = run_hmnist([*REPORT, str(results), "--compare", str(train)])
    assert code == 1
    assert str(train) in err and "expected bench" in err


def test_missing_file(tmp_path, run_hmnist):
    code, _, err = run_hmnist([*REPORT, str(tmp_path / "none.json")])
    assert code == 1
    assert "none.json: cannot read" in err


@pytest.mark.parametrize(
    "bad",
    [["--threshold", "-1"], ["--threshold", "x"], ["--threshold", "nan"], []],
    ids=["negative", "text", "nan", "no-files"],
)
def test_bad_report_option_is_one_line_and_exit_2(results, run_hmnist, bad):
    files = [str(results)] if bad else []
    code, _, err = run_hmnist([*REPORT, *files, *bad])
    assert code == 2
    assert err.count("\n") == 1
