"""Tables and plots from results files: speedups, thread scaling, comparisons.

:func:`build` reads ``hmnist bench`` files (and ``hmnist train --json``
files, for the accuracy plot) and writes, into one folder:

- ``<stem>.md``: the machine, then every table in Markdown, then links
  to the plots (``<stem>`` is the bench file's name, or ``report`` when
  several are given);
- ``<stem>-speedup.csv``: per cell, seconds per 60,000-sample epoch
  (median and IQR), samples/s, GFLOP/s, the fraction of the machine's
  peak, and the speedup over ``loop`` and over ``matmul`` at one thread
  on the same batch size, layer sizes and dtype; a geometric-mean row per
  kernel;
- ``<stem>-scaling.csv``: speedup from the fewest to more threads,
  parallel efficiency, and Amdahl's parallel fraction P;
- ``<stem>-machines.csv`` when the files come from several machines: one
  column of seconds per epoch per machine;
- ``<stem>-compare.csv`` with ``compare``: each cell's time over an
  earlier file's;
- PNG plots (matplotlib, Agg): thread scaling, kernel speedups, samples/s
  against batch size, accuracy per epoch.

Nothing here prints; the CLI shows what :func:`build` returns.
"""

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from . import stats
from .bench import read_results, record_key, threads_label
from .kernels import names as kernel_names


@dataclass
class Column:
    """A table column: header, record key, Markdown format, where it shows."""

    header: str
    key: str
    fmt: str = "{}"
    markdown: bool = True
    csv: bool = True


@dataclass
class Table:
    """Rows of dicts under named columns, written as Markdown or CSV."""

    title: str
    columns: list
    rows: list
    notes: list = field(default_factory=list)

    def to_markdown(self):
        """Return the table as GitHub Markdown, notes after it."""
        columns = [c for c in self.columns if c.markdown]
        lines = [
            "| " + " | ".join(c.header for c in columns) + " |",
            "|" + "|".join(" --- " for _ in columns) + "|",
        ]
        for row in self.rows:
            cells = [_format(row.get(c.key), c.fmt) for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines + [""] + [f"{note}  " for note in self.notes]).strip()

    def to_csv(self):
        """Return the table as CSV with unrounded numbers."""
        columns = [c for c in self.columns if c.csv]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        for row in self.rows:
            writer.writerow(
                ["" if row.get(c.key) is None else row[c.key] for c in columns]
            )
        return out.getvalue()


def _format(value, fmt):
    """Return ``value`` formatted, ``-`` for a missing one."""
    if value is None:
        return "-"
    return fmt.format(value)


@dataclass
class Report:
    """What :func:`build` made: tables, files written, regressions, notes."""

    tables: dict
    written: list
    regressions: int = 0
    notes: list = field(default_factory=list)


# ----------------------------------------------------------------------------
# Reading


def machine_label(document):
    """Return ``CPU model (N cores)`` for a bench document."""
    machine = document["machine"]
    return f"{machine['cpu']} ({machine['cores']} cores)"


def load(paths):
    """Read results files; return ``(bench, train)`` lists of ``(path, doc)``."""
    bench, train = [], []
    for path in paths:
        document = read_results(path, ("bench", "train"))
        (bench if document["command"] == "bench" else train).append(
            (Path(path), document)
        )
    return bench, train


def gather_cells(bench_docs):
    """Return every record with its ``machine``; later files replace earlier."""
    cells = {}
    for _, document in bench_docs:
        machine = machine_label(document)
        for record in document["cells"]:
            cells[(machine, record_key(record))] = {**record, "machine": machine}
    return list(cells.values())


def _config(record):
    """Return what a speedup compares across kernels: machine, batch, sizes, dtype."""
    return (
        record["machine"], record["batch_size"], tuple(record["sizes"]),
        record["dtype"],
    )  # fmt: skip


def _describe(record):
    """Return the display fields every table shares for one record."""
    label = threads_label(record) + ("*" if record.get("oversubscribed") else "")
    return {
        "machine": record["machine"], "kernel": record["kernel"],
        "threads_label": label, "threads": record["threads"],
        "blas_threads": record["blas_threads"],
        "numba_threads": record["numba_threads"],
        "batch_size": record["batch_size"],
        "sizes": "-".join(map(str, record["sizes"])), "dtype": record["dtype"],
    }  # fmt: skip


def _key_columns(machines):
    """Return the columns that name a cell; a machine column if several."""
    columns = [Column("machine", "machine")] if len(machines) > 1 else []
    return columns + [
        Column("kernel", "kernel"),
        Column("threads", "threads_label"),
        Column("threads", "threads", markdown=False),
        Column("blas", "blas_threads", markdown=False),
        Column("numba", "numba_threads", markdown=False),
        Column("batch", "batch_size"),
        Column("sizes", "sizes"),
        Column("dtype", "dtype"),
    ]


# ----------------------------------------------------------------------------
# Tables


def baselines(cells, kernel):
    """Return seconds per epoch of ``kernel`` at one thread, by configuration."""
    found = {}
    for record in cells:
        if record["kernel"] == kernel and record["threads"] == 1:
            found.setdefault(_config(record), record["seconds_per_epoch"])
    return found


def speedup_table(cells, machines):
    """Return the per-cell speedup table with a geometric-mean row per kernel."""
    over = {kernel: baselines(cells, kernel) for kernel in ("loop", "matmul")}
    rows, by_kernel = [], {}
    for record in cells:
        seconds = record["seconds_per_epoch"]
        row = {
            **_describe(record),
            "seconds_per_epoch": seconds,
            "iqr_seconds_per_epoch": record["iqr_seconds_per_epoch"],
            "samples_per_second": record["samples_per_second"],
            "gflops": record["gflops"],
            "percent_of_peak": 100 * record["fraction_of_peak"],
            "test_accuracy": _percent(record["test_accuracy"]),
            "samples": record["samples"],
            "repeats": len(record["repeat_seconds"]),
            "round_trip_ns": _slowest(record.get("core_round_trip_ns")),
        }
        for kernel, base in over.items():
            t0 = base.get(_config(record))
            row[f"speedup_over_{kernel}"] = t0 / seconds if t0 else None
        rows.append(row)
        by_kernel.setdefault((record["machine"], record["kernel"]), []).append(row)
    for (machine, kernel), group in by_kernel.items():
        mean = {"machine": machine, "kernel": kernel, "threads_label": "geomean"}
        for name in ("speedup_over_loop", "speedup_over_matmul"):
            mean[name] = stats.geomean([row[name] for row in group])
        if mean["speedup_over_loop"] or mean["speedup_over_matmul"]:
            rows.append(mean)
    columns = _key_columns(machines) + [
        Column("s/epoch", "seconds_per_epoch", "{:.3g}"),
        Column("IQR", "iqr_seconds_per_epoch", "{:.2g}"),
        Column("samples/s", "samples_per_second", "{:,.0f}"),
        Column("GFLOP/s", "gflops", "{:.2f}"),
        Column("% peak", "percent_of_peak", "{:.1f}"),
        Column("x loop", "speedup_over_loop", "{:.2f}"),
        Column("x matmul", "speedup_over_matmul", "{:.2f}"),
        Column("samples", "samples"),
        Column("accuracy %", "test_accuracy", "{:.2f}"),
        Column("repeats", "repeats", markdown=False),
        Column("core trip ns", "round_trip_ns", "{:.0f}"),
    ]
    notes = [
        "s/epoch: median seconds per 60,000 samples, IQR its interquartile range "
        "(each cell times `samples` samples, `repeats` times; accuracy: on the "
        "test set after training them once, equal for equal work); "
        "x loop, x matmul: speedup over that kernel at one thread on the same "
        "batch, sizes and dtype; % peak: of a large matrix product through the "
        "same BLAS on as many threads; core trip ns: a cache line's round trip "
        "between two cores, the slower of before and after the cell "
        "(`hmnist.probe`): a few hundred ns means the virtual cores sat far apart, "
        "which can slow a cell's threads."
    ]
    if any(record.get("oversubscribed") for record in cells):
        notes.append("\\* more threads than cores (oversubscribed).")
    return Table("Speedups", columns, rows, notes)


def _slowest(round_trips):
    """Return the largest of a cell's measured round trips, or None."""
    measured = [ns for ns in round_trips or () if ns is not None]
    return max(measured) if measured else None


def _percent(fraction):
    """Return ``100 * fraction``, or None."""
    return None if fraction is None else 100 * fraction


def scaling_groups(cells):
    """Return ``{group: {threads: seconds per epoch}}`` for thread scaling.

    A group is one kernel on one machine, batch size, layer sizes and
    dtype, with any pool it does not scale held fixed (the Numba kernel's
    BLAS threads).
    """
    groups = {}
    for record in cells:
        held = record["blas_threads"] if record["pool"] == "numba" else None
        key = (*_config(record), record["kernel"], held)
        times = groups.setdefault(key, {})
        times.setdefault(record["threads"], record["seconds_per_epoch"])
    return groups


def scaling_table(cells, machines):
    """Return the thread-scaling table: speedup, efficiency, Amdahl's P."""
    rows = []
    for key, times in scaling_groups(cells).items():
        machine, batch_size, sizes, dtype, kernel, held = key
        counts = sorted(times)
        base = counts[0]
        describe = {
            "machine": machine, "kernel": kernel, "batch_size": batch_size,
            "sizes": "-".join(map(str, sizes)), "dtype": dtype,
            "held": None if held is None else f"blas {held}",
            "from_threads": base, "from_seconds": times[base],
        }  # fmt: skip
        if len(counts) < 2:
            rows.append({**describe, "note": "one thread count: no fit"})
            continue
        t1, p = stats.amdahl_fit(counts, [times[n] for n in counts])
        note = "2 points: P fits them exactly" if len(counts) == 2 else ""
        for n in counts[1:]:
            speedup = times[base] / times[n]
            rows.append({
                **describe, "to_threads": n, "to_seconds": times[n],
                "speedup": speedup, "efficiency": speedup / (n / base),
                "amdahl_p": p, "amdahl_t1": t1, "note": note,
            })  # fmt: skip
    columns = [Column("machine", "machine")] if len(machines) > 1 else []
    columns += [
        Column("kernel", "kernel"),
        Column("batch", "batch_size"),
        Column("sizes", "sizes"),
        Column("dtype", "dtype"),
        Column("held", "held"),
        Column("threads", "from_threads"),
        Column("to", "to_threads"),
        Column("s/epoch", "from_seconds", "{:.3g}"),
        Column("s/epoch at to", "to_seconds", "{:.3g}"),
        Column("speedup", "speedup", "{:.2f}"),
        Column("efficiency", "efficiency", "{:.0%}"),
        Column("Amdahl P", "amdahl_p", "{:.2f}"),
        Column("fitted T1", "amdahl_t1", markdown=False),
        Column("note", "note"),
    ]
    notes = [
        "speedup from the fewest threads measured to more; efficiency = speedup "
        "/ thread ratio; Amdahl P: least-squares fit of T(n) = T1 ((1 - P) + P/n) "
        "over every thread count of the group (P < 0: threads slow it down)."
    ]
    return Table("Thread scaling", columns, rows, notes)


def machines_table(cells, machines):
    """Return one row per cell and one column of seconds per epoch per machine."""
    rows = {}
    for record in cells:
        row = rows.setdefault(record_key(record), _describe(record))
        row[f"machine_{machines.index(record['machine'])}"] = record[
            "seconds_per_epoch"
        ]
    columns = _key_columns([]) + [
        Column(f"s/epoch {machine}", f"machine_{i}", "{:.3g}")
        for i, machine in enumerate(machines)
    ]
    title = "Seconds per epoch on each machine"
    return Table(title, columns, list(rows.values()))


def compare_table(cells, old_document, old_path, threshold):
    """Return each cell's time over the old file's, marking regressions.

    ``threshold`` is a percentage: a cell more than that much slower than
    before is marked ``slower``; as much faster, ``faster``.
    """
    old = {record_key(record): record for record in old_document["cells"]}
    rows, unmatched = [], 0
    limit = 1 + threshold / 100
    for record in cells:
        before = old.get(record_key(record))
        if before is None:
            unmatched += 1
            continue
        ratio = record["seconds_per_epoch"] / before["seconds_per_epoch"]
        verdict = "slower" if ratio > limit else "faster" if ratio < 1 / limit else ""
        rows.append({
            **_describe(record), "old_seconds": before["seconds_per_epoch"],
            "new_seconds": record["seconds_per_epoch"], "ratio": ratio,
            "verdict": verdict,
        })  # fmt: skip
    columns = _key_columns({record["machine"] for record in cells}) + [
        Column("old s/epoch", "old_seconds", "{:.3g}"),
        Column("new s/epoch", "new_seconds", "{:.3g}"),
        Column("new/old", "ratio", "{:.3f}"),
        Column("verdict", "verdict"),
    ]
    notes = [f"against {old_path}; slower: more than {threshold:g}% slower."]
    if unmatched:
        notes.append(f"{unmatched} cells have no counterpart in {old_path}.")
    return Table("Compared with an earlier run", columns, rows, notes)


# ----------------------------------------------------------------------------
# Plots

# Line styles for thread settings (batch plot) and held pools (scaling plot).
_STYLES = ("-", "--", ":", "-.")
# Pixels per inch: the standard preset's grids come out 1,400 to 1,750 wide.
_DPI = 150


def plot_all(cells, train_docs, out_dir, stem, notes):
    """Write the PNG plots; return their paths, or None without matplotlib.

    A plot without data is left out, with a line in ``notes``.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None

    def save(figure, name):
        """Render ``figure`` with Agg into ``<stem>-<name>.png``."""
        path = Path(out_dir) / f"{stem}-{name}.png"
        FigureCanvasAgg(figure).print_png(str(path))
        return path

    written = []
    for name, plot, needs in (
        ("scaling", _plot_scaling, "two thread counts of one kernel"),
        ("speedup", _plot_speedups, "loop or matmul at one thread"),
        ("batch", _plot_batch, "bench cells"),
    ):
        figure = plot(Figure, cells) if cells else None
        if figure is not None:
            written.append(save(figure, name))
        elif cells:
            notes.append(f"no {name} plot: it needs {needs}")
    if train_docs:
        written.append(save(_plot_accuracy(Figure, train_docs), "accuracy"))
    return written


def _palette(n):
    """Return matplotlib's tab10 colours, or tab20's for more than ten lines."""
    from matplotlib import colormaps

    return colormaps["tab10" if n <= 10 else "tab20"].colors


def kernel_colours(cells):
    """Return ``{kernel: colour}``, fixed by the registry's order for every plot.

    Kernels the registry does not know (from an older results file) come
    after its own, in the order the cells name them.
    """
    order = kernel_names()
    order += [k for k in dict.fromkeys(r["kernel"] for r in cells) if k not in order]
    palette = _palette(10)
    return {kernel: palette[i % len(palette)] for i, kernel in enumerate(order)}


def _grid(Figure, n, panel, legend_width):
    """Return a figure and ``n`` axes sharing y, up to three a row, 2x2 for four."""
    cols = min(n, 2 if n == 4 else 3)
    rows = -(-n // cols)
    figure = Figure(
        figsize=(panel[0] * cols + legend_width, panel[1] * rows + 0.4),
        dpi=_DPI, layout="constrained",
    )  # fmt: skip
    axes = figure.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax in axes[n:]:
        ax.remove()
    return figure, list(axes[:n])


def _legend(figure, handles, **options):
    """Draw one legend for the figure, right of the panels."""
    figure.legend(
        handles=handles, loc="outside right upper", fontsize="small", **options
    )


def _line(label, colour="0.3", style="-", marker=None):
    """Return a legend entry for a line that is not drawn."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, linestyle=style, marker=marker, label=label)


def _log_y(ax):
    """Set a log y axis, ticks at 1, 2 and 5 of each decade, ``20k`` for 20,000."""
    from matplotlib.ticker import LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(
        lambda y, _: f"{y / 1000:g}k" if y >= 1000 else f"{y:g}"
    )
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)


def _sizes(sizes):
    """Return ``784-30-10`` for layer sizes."""
    return "-".join(map(str, sizes))


def _panel_title(machine, sizes, dtype, machines):
    """Return ``784-30-10 float64``, led by the machine if there are several."""
    title = f"{_sizes(sizes)} {dtype}"
    return f"{machine}\n{title}" if len(machines) > 1 else title


def _setting(record):
    """Return a sortable thread setting: ``(apart, threads, label)``."""
    n = record["threads"]
    if record.get("apart"):
        return (True, n, threads_label(record))
    return (False, n, f"{n} thread" + ("s" if n > 1 else ""))


def _plot_scaling(Figure, cells):
    """Plot speedup against threads, a panel per kernel, with the ideal line.

    A colour per batch size, layer sizes and dtype, the same in every
    panel; a line style per count of a pool held fixed (the Numba kernel's
    BLAS threads) when there are several.
    """
    groups = {
        key: times for key, times in scaling_groups(cells).items() if len(times) > 1
    }
    if not groups:
        return None
    order = list(kernel_colours(cells))
    machines = list(dict.fromkeys(key[0] for key in groups))
    panels = {}
    for key in sorted(groups, key=lambda k: (machines.index(k[0]), order.index(k[4]))):
        panels.setdefault((key[0], key[4]), []).append(key)
    configs = list(dict.fromkeys(key[1:4] for key in groups))
    palette = _palette(len(configs))
    colours = {c: palette[i % len(palette)] for i, c in enumerate(configs)}
    held = sorted({key[5] for key in groups if key[5] is not None})
    styles = {h: _STYLES[i % len(_STYLES)] for i, h in enumerate(held)}
    if len(held) < 2:
        styles = dict.fromkeys(held, "-")
    base = min(n for times in groups.values() for n in times)

    figure, axes = _grid(Figure, len(panels), (3.2, 2.6), 1.9)
    for ax, ((machine, kernel), keys) in zip(axes, panels.items()):
        top = base
        for key in keys:
            times = groups[key]
            counts = sorted(times)
            speedups = [times[counts[0]] / times[n] for n in counts]
            ax.plot(
                counts, speedups, marker="o", markersize=4,
                color=colours[key[1:4]], linestyle=styles.get(key[5], "-"),
            )  # fmt: skip
            top = max(top, counts[-1])
        ax.plot([base, top], [1, top / base], "k--", linewidth=1)
        ax.axhline(1, color="0.6", linewidth=0.8)
        ax.set_xticks(sorted({n for key in keys for n in groups[key]}))
        title = kernel if len(machines) < 2 else f"{kernel}, {machine}"
        fixed = {key[5] for key in keys}
        if len(held) == 1 and fixed == set(held):
            title += f" (BLAS held at {held[0]})"
        ax.set_title(title, fontsize="medium")
    handles = [
        _line(f"b{b} {_sizes(s)} {d.replace('float', 'f')}", colour, marker="o")
        for (b, s, d), colour in colours.items()
    ]
    handles.append(_line("ideal", "k", "--"))
    if len(held) > 1:
        handles += [_line(f"BLAS held at {h}", style=styles[h]) for h in held]
    _legend(figure, handles, title="batch b, layer sizes, dtype")
    figure.supxlabel("threads", fontsize="medium")
    s = "s" if base > 1 else ""
    figure.supylabel(f"speedup over {base} thread{s}", fontsize="medium")
    return figure


def _plot_speedups(Figure, cells):
    """Plot each kernel's speedup over loop (else matmul), log scale.

    A panel per layer sizes and dtype, a group of bars per batch size and
    thread setting, a bar per kernel in its fixed colour.
    """
    from matplotlib.patches import Patch

    base_kernel = "loop" if baselines(cells, "loop") else "matmul"
    base = baselines(cells, base_kernel)
    panels = {}
    for record in cells:
        t0 = base.get(_config(record))
        if t0 is None:
            continue
        machine, batch_size, sizes, dtype = _config(record)
        group = (batch_size, *_setting(record))
        bars = panels.setdefault((machine, sizes, dtype), {}).setdefault(group, {})
        bars[record["kernel"]] = t0 / record["seconds_per_epoch"]
    if not panels:
        return None
    colours = kernel_colours(cells)
    measured = [bars for groups in panels.values() for bars in groups.values()]
    kernels = [kernel for kernel in colours if any(kernel in b for b in measured)]
    heights = [height for bars in measured for height in bars.values()]
    machines = {key[0] for key in panels}
    width = 0.8 / len(kernels)
    # Past four groups (pools set apart add some) a panel widens, labels tilt.
    most = max(len(groups) for groups in panels.values())
    panel = (min(max(4.4, 0.5 * most), 9.0), 3.0 + 0.4 * (most > 4))

    figure, axes = _grid(Figure, len(panels), panel, 1.2)
    for ax, ((machine, sizes, dtype), groups) in zip(axes, panels.items()):
        order = sorted(groups)
        for i, kernel in enumerate(kernels):
            shift = (i - (len(kernels) - 1) / 2) * width
            xs = [j + shift for j, g in enumerate(order) if kernel in groups[g]]
            ys = [groups[g][kernel] for g in order if kernel in groups[g]]
            if xs:
                drawn = ax.bar(xs, ys, width, color=colours[kernel])
                ax.bar_label(drawn, fmt="%.2g", fontsize=6, rotation=90, padding=2)
        if most > 4:
            labels = [f"b{g[0]} {g[3]}" for g in order]
            ax.set_xticks(range(len(order)), labels, rotation=45, ha="right")
        else:
            ax.set_xticks(range(len(order)), [f"batch {g[0]}\n{g[3]}" for g in order])
        ax.axhline(1, color="k", linewidth=0.8)
        ax.set_title(_panel_title(machine, sizes, dtype, machines), fontsize="medium")
        _log_y(ax)
    ax.set_ylim(min(heights) / 1.5, max(heights) * 2.5)
    handles = [Patch(color=colours[kernel], label=kernel) for kernel in kernels]
    _legend(figure, handles, title="kernel")
    figure.supylabel(
        f"speedup over {base_kernel} at 1 thread, log scale\n"
        "(same batch size, layer sizes and dtype)",
        fontsize="medium",
    )
    return figure


def _plot_batch(Figure, cells):
    """Plot samples/s against batch size; one panel per layer sizes and dtype.

    Colour marks the kernel (the same as in the speedup plot), line style
    the thread setting.
    """
    panels = {}
    for record in cells:
        panel = (record["machine"], tuple(record["sizes"]), record["dtype"])
        line = (record["kernel"], _setting(record))
        points = panels.setdefault(panel, {}).setdefault(line, {})
        points[record["batch_size"]] = record["samples_per_second"]
    colours = kernel_colours(cells)
    kernels = [k for k in colours if any(k == r["kernel"] for r in cells)]
    settings = sorted({line[1] for lines in panels.values() for line in lines})
    styles = {s: _STYLES[i % len(_STYLES)] for i, s in enumerate(settings)}
    machines = {panel[0] for panel in panels}

    figure, axes = _grid(Figure, len(panels), (4.0, 3.0), 1.4)
    for ax, ((machine, sizes, dtype), lines) in zip(axes, panels.items()):
        for kernel, setting in sorted(lines, key=lambda k: (kernels.index(k[0]), k[1])):
            points = lines[(kernel, setting)]
            batch_sizes = sorted(points)
            ax.plot(
                batch_sizes, [points[b] for b in batch_sizes], marker="o",
                markersize=4, color=colours[kernel], linestyle=styles[setting],
            )  # fmt: skip
        ax.set_xscale("log")
        _log_y(ax)
        ticks = sorted({b for points in lines.values() for b in points})
        ax.set_xticks(ticks, [str(b) for b in ticks])
        ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        ax.set_title(_panel_title(machine, sizes, dtype, machines), fontsize="medium")
    handles = [_line(kernel, colours[kernel], marker="o") for kernel in kernels]
    handles += [_line(s[2], style=styles[s]) for s in settings]
    _legend(figure, handles)
    figure.supxlabel("batch size (log scale)", fontsize="medium")
    figure.supylabel("samples per second (log scale)", fontsize="medium")
    return figure


def _plot_accuracy(Figure, train_docs):
    """Plot test accuracy per epoch of each ``hmnist train --json`` run."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    for _, document in train_docs:
        config = document["config"]
        epochs = document["epochs"]
        label = (
            f"{config['cost']} {'-'.join(map(str, config.get('sizes', [])))} "
            f"eta {config.get('eta')}"
        )
        ax.plot(
            [e["epoch"] + 1 for e in epochs], [100 * e["accuracy"] for e in epochs],
            marker=".", label=label,
        )  # fmt: skip
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="epoch", ylabel="test accuracy %", title="Accuracy per epoch")
    ax.legend(fontsize="small")
    return figure


# ----------------------------------------------------------------------------
# Everything


def machine_summary(bench_docs):
    """Return Markdown lines describing each file's machine and run."""
    lines = []
    for path, document in bench_docs:
        machine, options = document["machine"], document.get("options", {})
        blas = ", ".join(
            f"{lib.get('internal_api')} {lib.get('version')} "
            f"({lib.get('architecture')})"
            for lib in machine.get("threadpool_info", [])
            if lib.get("user_api") == "blas"
        )
        lines += [
            f"- `{path.name}`: {machine_label(document)}; Python "
            f"{machine.get('python')}, NumPy {machine.get('numpy')}, Numba "
            f"{machine.get('numba')} ({machine.get('threading_layer')}); "
            f"BLAS {blas or 'unknown'}; commit {document.get('commit')}; "
            f"started {document.get('started')}; preset {options.get('preset')}, "
            f"{len(document['cells'])} cells."
        ]
    return lines


def build(paths, out_dir=None, compare=None, threshold=10.0, plots=True):
    """Read results files; write tables and plots; return a :class:`Report`.

    Parameters
    ----------
    paths : list of str or Path
        ``hmnist bench`` results and ``hmnist train --json`` files, in any
        order (told apart by their ``command``).
    out_dir : str or Path, optional
        Where to write; by default the folder of the first file.
    compare : str or Path, optional
        An earlier bench file to set every cell against.
    threshold : float
        Percent slower than ``compare`` that counts as a regression.
    plots : bool
        Draw the plots (when matplotlib is installed).

    Raises
    ------
    HmnistError
        When a file is missing, damaged, or not an hmnist results file.
    """
    bench_docs, train_docs = load(paths)
    old = read_results(compare) if compare else None
    cells = gather_cells(bench_docs)
    machines = list(dict.fromkeys(machine_label(doc) for _, doc in bench_docs))
    out_dir = Path(out_dir) if out_dir else Path(paths[0]).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = bench_docs[0][0].stem if len(bench_docs) == 1 else "report"

    tables = {}
    if cells:
        tables["speedup"] = speedup_table(cells, machines)
        tables["scaling"] = scaling_table(cells, machines)
    if len(machines) > 1:
        tables["machines"] = machines_table(cells, machines)
    if old is not None:
        tables["compare"] = compare_table(cells, old, compare, threshold)
    report = Report(tables=tables, written=[])
    if "compare" in tables:
        rows = tables["compare"].rows
        report.regressions = sum(row["verdict"] == "slower" for row in rows)

    for name, table in tables.items():
        path = out_dir / f"{stem}-{name}.csv"
        path.write_text(table.to_csv())
        report.written.append(path)
    drawn = plot_all(cells, train_docs, out_dir, stem, report.notes) if plots else []
    if drawn is None:
        report.notes.append("matplotlib is not installed: plots skipped")
    parts = [f"# hmnist results: {stem}", ""] + machine_summary(bench_docs)
    for table in tables.values():
        parts += ["", f"## {table.title}", "", table.to_markdown()]
    if drawn:
        parts += ["", "## Plots", ""]
        parts += [f"![{path.stem}]({path.name})" for path in drawn]
    markdown = out_dir / f"{stem}.md"
    markdown.write_text("\n".join(parts) + "\n")
    report.written += [markdown, *(drawn or [])]
    return report
