"""hmnist bench: FLOP count, cells, results files, resume, interrupt, presets.

Most runs use tiny IDX files, the matmul kernel and a few dozen samples;
one runs the ``quick`` preset on the real data. Speed is never asserted.
"""

import json
import os

import pytest

from hmnist import bench, kernels
from hmnist.errors import HmnistError

# A bench run of two cells that takes well under a second.
TINY = [
    "bench", "--kernels", "matmul", "--threads", "1", "--batch-sizes", "10", "20",
    "--sizes", "784,5,10", "--dtypes", "float64", "--samples", "40",
    "--repeats", "2", "--peak-size", "32",
]  # fmt: skip


def tiny_bench(data_dir, out, *extra):
    """Return the argv of the two-cell bench on ``data_dir`` into ``out``."""
    return [*TINY, "--data", str(data_dir), "--out", str(out), *extra]


# ----------------------------------------------------------------------------
# FLOPs and cells


def test_flops_per_sample_by_hand():
    # 784x30: forward + weight gradient; 30x10: forward, gradient, error.
    assert bench.flops_per_sample([784, 30, 10]) == 4 * 784 * 30 + 6 * 30 * 10
    assert bench.flops_per_sample([784, 100, 10]) == 4 * 78_400 + 6 * 1_000
    deep = 4 * 784 * 100 + 6 * 100 * 100 + 6 * 100 * 10
    assert bench.flops_per_sample([784, 100, 100, 10]) == deep
    assert bench.flops_per_sample([784, 10]) == 4 * 7_840


POOLS = {"loop": "blas", "matmul": "blas", "numba": "numba"}
PEER_POOLS = {"torch": "torch", "torch-fast": "torch", "jax": "jax"}


def test_standard_preset_is_every_axis_multiplied_out():
    preset = bench.PRESETS["standard"]
    assert preset.kernels == (*POOLS, *PEER_POOLS)
    cells = bench.make_cells(
        {**POOLS, **PEER_POOLS}, threads=preset.threads,
        batch_sizes=preset.batch_sizes, sizes=preset.sizes, dtypes=preset.dtypes,
    )  # fmt: skip
    assert len(cells) == 6 * 2 * 2 * 2 * 2
    assert len({cell.key() for cell in cells}) == len(cells)
    numba = [c for c in cells if c.kernel == "numba"]
    assert {(c.blas_threads, c.numba_threads) for c in numba} == {(1, 1), (1, 2)}
    matmul = [c for c in cells if c.kernel == "matmul"]
    assert {(c.blas_threads, c.numba_threads) for c in matmul} == {(1, None), (2, None)}
    jax = [c for c in cells if c.kernel == "jax"]
    assert {(c.threads, c.blas_threads, c.numba_threads) for c in jax} == {
        (1, None, None),
        (2, None, None),
    }


def test_pools_apart_multiply_only_the_axes_a_kernel_uses():
    cells = bench.make_cells(
        {**POOLS, "torch": "torch"}, threads=(1,), blas_threads=(1, 2),
        numba_threads=(1, 2), batch_sizes=(10,), sizes=((784, 30, 10),),
        dtypes=("float64",),
    )  # fmt: skip
    by_kernel = {name: [c for c in cells if c.kernel == name] for name in POOLS}
    assert len(by_kernel["matmul"]) == 2  # Numba's axis is not multiplied out
    assert len(by_kernel["numba"]) == 4
    # A peer uses neither pool: only its own threads.
    torch = [(c.threads, c.blas_threads, c.apart) for c in cells if c.kernel == "torch"]
    assert torch == [(1, None, False)]
    over = [c for c in cells if c.oversubscribed()]
    assert {(c.kernel, c.blas_threads, c.numba_threads) for c in over} == {
        ("numba", 2, 2)
    }


def test_a_setting_both_axes_give_is_one_cell():
    cells = bench.make_cells(
        POOLS, threads=(1, 2), blas_threads=(1, 2), numba_threads=(1,),
        batch_sizes=(10,), sizes=((784, 30, 10),), dtypes=("float64",),
    )  # fmt: skip
    matmul = [c for c in cells if c.kernel == "matmul"]
    assert [c.threads for c in matmul] == [1, 2]
    assert not any(c.apart for c in matmul)  # the kernel's own limit is used
    numba = [(c.blas_threads, c.numba_threads) for c in cells if c.kernel == "numba"]
    assert numba == [(1, 1), (1, 2), (2, 1)]


def test_slow_kernels_time_fewer_samples_in_whole_batches():
    cell = bench.Cell("loop", 1, 1, None, 100, (784, 30, 10), "float64")
    assert bench.samples_for(cell, 6000, 60_000) == 600
    assert bench.samples_for(cell, 500, 60_000) == 100  # at least one batch
    torch = bench.Cell("torch", 1, None, None, 10, (784, 30, 10), "float64")
    assert bench.samples_for(torch, 20_000, 60_000) == 2000
    fast = bench.Cell("numba", 1, 1, 1, 1000, (784, 30, 10), "float64")
    assert bench.samples_for(fast, 2500, 60_000) == 3000
    assert bench.samples_for(fast, 60_000, 120) == 120


# ----------------------------------------------------------------------------
# Results files


def test_record_layout(tiny_mnist, tmp_path, run_hmnist):
    out = tmp_path / "r.json"
    code, stdout, err = run_hmnist(tiny_bench(tiny_mnist, out))
    assert code == 0, err
    document = bench.read_results(out)
    assert document["format_version"] == bench.FORMAT_VERSION
    assert document["machine"]["cores"] >= 1
    assert "OPENBLAS_CORETYPE" in document["machine"]["env"]
    assert document["options"]["samples"] == 40
    assert [peak["size"] for peak in document["peaks"]] == [32]
    assert [cell["batch_size"] for cell in document["cells"]] == [10, 20]
    for cell in document["cells"]:
        assert len(cell["repeat_seconds"]) == 2
        assert cell["median_seconds"] > 0
        assert cell["samples"] == 40
        n = cell["samples"]
        assert cell["seconds_per_epoch"] == pytest.approx(
            cell["median_seconds"] / n * 60_000
        )
        assert cell["gflops"] == pytest.approx(
            bench.flops_per_sample([784, 5, 10]) * n / cell["median_seconds"] / 1e9
        )
        assert cell["fraction_of_peak"] == pytest.approx(
            cell["gflops"] / cell["peak_gflops"]
        )
        assert cell["test_total"] == 30
        assert cell["oversubscribed"] is False
        assert cell["kernel_info"]["name"] == "matmul"
        assert isinstance(cell["threadpool_info"], list)
        assert cell["process"] == "parent"
        before, after = cell["core_round_trip_ns"]
        assert all(ns is None or ns > 0 for ns in (before, after))
    assert "| matmul |" in stdout


def test_timed_repeats_start_after_the_warm_up_and_a_pause(tiny_mnist, monkeypatch):
    kernel = kernels.get("matmul")
    events = []

    def log(name, call):
        def logged(*args, **kwargs):
            events.append(name)
            return call(*args, **kwargs)

        return logged

    monkeypatch.setattr(kernel, "warm_up", log("warm-up", kernel.warm_up))
    monkeypatch.setattr(kernel, "train_epoch", log("epoch", kernel.train_epoch))
    monkeypatch.setattr(bench, "settle", log("pause", lambda: None))
    cell = bench.Cell("matmul", 1, 1, None, 10, (784, 5, 10), "float64")
    train, test = bench.load_samples(tiny_mnist, "float64")
    bench.measure_cell(cell, kernel, train, test, samples=20, repeats=3, seed=0)
    assert events[0] == "warm-up"
    assert events[-4:] == ["pause", "epoch", "epoch", "epoch"]


def test_an_interrupted_write_leaves_the_old_file_whole(
    tiny_mnist, tmp_path, monkeypatch
):
    out = tmp_path / "results" / "r.json"
    cells = bench.make_cells(
        {"matmul": "blas"}, threads=(1,), batch_sizes=(10, 20),
        sizes=((784, 5, 10),), dtypes=("float64",),
    )  # fmt: skip
    document = bench.new_document({})
    options = dict(data_dir=tiny_mnist, samples=20, repeats=1, seed=0, peak_size=16)
    kernel_of = {"matmul": kernels.get("matmul")}
    bench.run(document, cells[:1], out, kernel_of, **options)
    before = out.read_bytes()

    def dump_half(obj, f, **kwargs):
        f.write('{"format_version": 1, "cells": [')
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dump", dump_half)
    with pytest.raises(RuntimeError, match="disk full"):
        bench.run(document, cells[1:], out, kernel_of, **options)
    monkeypatch.undo()
    assert out.read_bytes() == before
    assert len(bench.read_results(out)["cells"]) == 1
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temp file


def test_resume_skips_measured_cells_and_measures_the_rest(
    tiny_mnist, tmp_path, run_hmnist
):
    out = tmp_path / "r.json"
    assert run_hmnist(tiny_bench(tiny_mnist, out))[0] == 0
    document = json.loads(out.read_text())
    kept = document["cells"][0]
    kept["repeat_seconds"] = [123.0, 123.0]  # a marker no real run gives
    document["cells"] = [kept]
    out.write_text(json.dumps(document))

    code, _, err = run_hmnist(tiny_bench(tiny_mnist, out, "--resume"))
    assert code == 0, err
    assert "1 of 2 cells already measured" in err
    cells = bench.read_results(out)["cells"]
    assert [cell["batch_size"] for cell in cells] == [10, 20]
    assert cells[0]["repeat_seconds"] == [123.0, 123.0]
    assert cells[1]["repeat_seconds"] != [123.0, 123.0]

    # Everything measured: nothing to do, the file is unchanged.
    before = out.read_bytes()
    assert run_hmnist(tiny_bench(tiny_mnist, out, "--resume"))[0] == 0
    assert out.read_bytes() == before


def test_resume_refuses_another_commit(tiny_mnist, tmp_path, run_hmnist):
    out = tmp_path / "r.json"
    assert run_hmnist(tiny_bench(tiny_mnist, out))[0] == 0
    document = json.loads(out.read_text())
    document["commit"] = "0" * 40
    out.write_text(json.dumps(document))
    code, _, err = run_hmnist(tiny_bench(tiny_mnist, out, "--resume"))
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert str(out) in err and "cannot resume" in err


def test_interrupt_keeps_finished_cells_and_exits_130(
    tiny_mnist, tmp_path, run_hmnist, monkeypatch
):
    measure = bench.measure_cell
    calls = []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return measure(*args, **kwargs)

    monkeypatch.setattr(bench, "measure_cell", interrupted_second)
    out = tmp_path / "r.json"
    code, stdout, err = run_hmnist(tiny_bench(tiny_mnist, out))
    assert code == 130
    assert err.strip().splitlines() == [
        f"hmnist bench: interrupted; 1 cells saved in {out}"
    ]
    assert stdout == ""
    cells = bench.read_results(out)["cells"]
    assert [cell["batch_size"] for cell in cells] == [10]


def test_oversubscribed_cell_is_flagged_and_warned(tiny_mnist, tmp_path, run_hmnist):
    out = tmp_path / "r.json"
    argv = tiny_bench(tiny_mnist, out, "--threads", "64", "--batch-sizes", "10")
    code, _, err = run_hmnist(argv)
    assert code == 0, err
    assert "more threads than the" in err
    assert bench.read_results(out)["cells"][0]["oversubscribed"] is True


def test_default_out_names_preset_and_process():
    path = bench.default_out("quick")
    assert path.startswith(os.path.join("results", "bench-quick-"))
    assert path.endswith(f"-{os.getpid()}.json")


def test_read_results_names_the_file_and_the_fault(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"format_version": 1, "command": "bench", "machine": {}}')
    with pytest.raises(HmnistError, match=r"x\.json: damaged bench results"):
        bench.read_results(path)


@pytest.mark.parametrize(
    "bad",
    [
        ["--threads", "0"],
        ["--kernels", "nope"],
        ["--batch-sizes", "0"],
        ["--sizes", "784,30"],
        ["--dtypes", "float16"],
        ["--repeats", "0"],
        ["--samples", "many"],
        ["--numba-threads", "0"],
        ["--preset", "huge"],
        ["--resume"],
    ],
    ids=lambda bad: " ".join(bad),
)
def test_bad_bench_option_is_one_line_and_exit_2(tiny_mnist, run_hmnist, bad):
    code, _, err = run_hmnist(["bench", "--data", str(tiny_mnist), *bad])
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "error" in err


# ----------------------------------------------------------------------------
# The quick preset on the real data, and its report


def test_quick_preset_end_to_end(real_data_dir, tmp_path, run_hmnist):
    out = tmp_path / "quick.json"
    argv = ["bench", "--preset", "quick", "--data", str(real_data_dir)]
    code, stdout, err = run_hmnist([*argv, "--out", str(out), "--verbose"])
    assert code == 0, err
    cells = bench.read_results(out)["cells"]
    assert [cell["kernel"] for cell in cells] == ["matmul", "numba"]
    for cell in cells:
        for name in ("median_seconds", "samples_per_second", "gflops", "peak_gflops"):
            assert cell[name] > 0
    # The same seeded work: the same network, to rounding.
    accuracies = [cell["test_accuracy"] for cell in cells]
    assert accuracies[0] == pytest.approx(accuracies[1], abs=2e-3)
    assert accuracies[0] > 0.2
    assert len([line for line in err.splitlines() if "s/epoch" in line]) == 2
    assert "| numba | 1t |" in stdout

    code, stdout, err = run_hmnist(["report", str(out)])
    assert code == 0, err
    assert (tmp_path / "quick.md").is_file()
    rows = (tmp_path / "quick-speedup.csv").read_text().splitlines()
    header = rows[0].split(",")
    numba = dict(zip(header, rows[2].split(",")))
    assert numba["kernel"] == "numba"
    for name in ("seconds_per_epoch", "samples_per_second", "gflops"):
        assert float(numba[name]) > 0
    assert float(numba["speedup_over_matmul"]) > 0
    assert "## Speedups" in stdout


def test_a_kernel_not_installed_is_skipped_with_one_line(
    tiny_mnist, tmp_path, run_hmnist, monkeypatch
):
    registry = {**kernels._REGISTRY, "ghost": ("no_such_module", "GhostKernel")}
    monkeypatch.setattr(kernels, "_REGISTRY", registry)
    out = tmp_path / "r.json"
    argv = tiny_bench(tiny_mnist, out, "--kernels", "ghost", "matmul")
    code, _, err = run_hmnist(argv)
    assert code == 0, err
    skipped = [line for line in err.splitlines() if "ghost" in line]
    assert len(skipped) == 1 and "skipped" in skipped[0]
    document = bench.read_results(out)
    assert document["options"]["kernels"] == ["matmul"]
    assert {cell["kernel"] for cell in document["cells"]} == {"matmul"}


def test_numba_threads_beyond_its_pool_leave_no_cell(tiny_mnist, tmp_path, run_hmnist):
    out = tmp_path / "r.json"
    argv = tiny_bench(tiny_mnist, out, "--kernels", "numba", "--threads", "1024")
    code, _, err = run_hmnist(argv)
    assert code == 1
    assert "more than" in err and "no cell to measure" in err
    assert not out.exists()


# ----------------------------------------------------------------------------
# Kernels measured in a child process


needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity"
)


@needs_affinity
def test_a_jax_cell_is_measured_in_a_child_on_its_cores(
    tiny_mnist, tmp_path, run_hmnist
):
    pytest.importorskip("jax", reason="the jax kernel needs the 'peers' extra")
    out = tmp_path / "r.json"
    argv = tiny_bench(tiny_mnist, out, "--kernels", "jax", "matmul")
    code, _, err = run_hmnist([*argv, "--batch-sizes", "10"])
    assert code == 0, err
    assert "skipped" not in err
    jax, matmul = bench.read_results(out)["cells"]
    assert (jax["kernel"], jax["threads"]) == ("jax", 1)
    assert jax["process"] == "child"
    assert len(jax["affinity"]) == 1
    assert jax["affinity"][0] in os.sched_getaffinity(0)
    assert jax["kernel_info"]["xla_threads"] == 1
    assert len(jax["repeat_seconds"]) == 2
    assert jax["warmup_seconds"] > 0
    # The same samples, seed and data as a cell measured in this process.
    assert jax["samples"] == matmul["samples"] == 40
    assert jax["test_correct"] == matmul["test_correct"]
    assert matmul["process"] == "parent"


@needs_affinity
def test_a_failing_child_is_a_one_line_skip(
    tiny_mnist, tmp_path, run_hmnist, monkeypatch
):
    pytest.importorskip("jax", reason="the jax kernel needs the 'peers' extra")
    monkeypatch.setattr(bench, "_CHILD_CODE", "raise ValueError('no luck')")
    out = tmp_path / "r.json"
    code, _, err = run_hmnist(tiny_bench(tiny_mnist, out, "--kernels", "jax"))
    assert code == 1
    assert "Traceback" not in err
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == 2  # one per batch size
    assert "child process on 1 core(s) failed: ValueError: no luck" in skipped[0]
    assert not out.exists()


def test_a_child_needs_as_many_cores_as_threads():
    if not hasattr(os, "sched_setaffinity"):
        with pytest.raises(HmnistError, match="sched_setaffinity"):
            bench.child_cores(1)
        return
    allowed = sorted(os.sched_getaffinity(0))
    assert bench.child_cores(1) == allowed[:1]
    assert bench.child_cores(len(allowed)) == allowed
    with pytest.raises(HmnistError, match="needs"):
        bench.child_cores(len(allowed) + 1)
