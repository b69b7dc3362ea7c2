"""Config sweeps: `python -m seal_jax.sweep --config configs/sweeps/<name>.py [--config.a.b=v ...]`.

The sweep file's `get_config()` is the base config (command-line overrides apply to it) and `get_sweep()` the
points: a list of {dotted config key: value} overrides, e.g. `product(**{"inner.learning_rate": [1e-3, 3e-3]})`.
Each point is a normal run in `<workdir>/<point name>` (the name is made from its overrides, so it is stable).
A point with a `results.json` is finished and skipped; an unfinished one resumes from its journal, so rerunning
the command resumes the sweep. The table (`sweep.md`, `sweep.csv`) and plot (`sweep.png`) of the swept values
against each point's results go to the sweep's workdir.

Points run one after another in this process (`seal_jax.main.run`): the devices, `jax.distributed` and the
compilation caches are set up once, every process of a multi-host sweep runs the same points in step, and process
0 writes the table. A point that fails on bad input is recorded as failed and the others still run.
"""

from __future__ import annotations

import csv
import gc
import io
import itertools
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from seal_jax import config_files, report
from seal_jax import main as entry
from seal_jax.engine import distributed
from seal_jax.errors import UserInputError

Point = dict[str, Any]


def product(**axes: Sequence[Any]) -> list[Point]:
    """Every combination of the axes' values, the last axis varying fastest:
    `product(**{"inner.learning_rate": [1e-3, 3e-3], "inner.lora_rank": [4, 8]})` -> 4 points."""
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


def zipped(**axes: Sequence[Any]) -> list[Point]:
    """The axes' values taken together, position by position (every axis must have the same length)."""
    lengths = {key: len(values) for key, values in axes.items()}
    if len(set(lengths.values())) > 1:
        raise UserInputError(f"zipped axes have different lengths: {lengths}")
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in zip(*axes.values(), strict=True)]


def _value_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def point_name(point: Point) -> str:
    """A directory name from the overrides, e.g. "inner.learning_rate=0.001,inner.lora_rank=8" (characters a
    file name should not hold become "_")."""
    text = ",".join(f"{key}={_value_text(value)}" for key, value in point.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text) or "base"


def _has_key(cfg: ml_collections.ConfigDict, key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def point_config(base: ml_collections.ConfigDict, point: Point, workdir: str) -> ml_collections.ConfigDict:
    """`base` with the point's overrides and its own workdir; an unknown key or a value of the wrong type is a
    one-line UserInputError."""
    cfg = base.copy_and_resolve_references()
    for key in point:
        if not _has_key(cfg, key) or isinstance(_get(cfg, key), ml_collections.ConfigDict):
            raise UserInputError(f"sweep point {point}: {key!r} is not a config value")
    try:
        cfg.update_from_flattened_dict(dict(point))
    except TypeError as err:
        raise UserInputError(f"sweep point {point}: {err}") from None
    cfg.workdir = workdir
    return cfg


def _get(cfg: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_points(points: Any) -> list[Point]:
    """`get_sweep()`'s value as a non-empty list of dicts with string keys and distinct names."""
    if isinstance(points, dict) or not isinstance(points, Iterable):
        raise UserInputError(f"get_sweep() must return a list of dicts, not {type(points).__name__}")
    points = list(points)
    if not points:
        raise UserInputError("get_sweep() returned no points")
    for point in points:
        if not isinstance(point, dict) or not all(isinstance(k, str) for k in point):
            raise UserInputError(f"a sweep point must be a dict of config keys to values, got {point!r}")
    names = [point_name(p) for p in points]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserInputError(f"sweep points repeat: {', '.join(repeated)}")
    return points


def load_points(path: str) -> list[Point]:
    """The points of the sweep file at `path` (its `get_sweep()`)."""
    module = config_files.load_module(path)
    if not hasattr(module, "get_sweep"):
        raise UserInputError(f"{path} defines no get_sweep()")
    return check_points(module.get_sweep())


def _finished(workdir: str) -> dict[str, Any] | None:
    """The point's results.json (on process 0, shared with every process), None while unfinished."""

    def read() -> dict[str, Any] | None:
        path = epath.Path(workdir) / "results.json"
        return json.loads(path.read_text()) if path.exists() else None

    return distributed.on_primary(read)


def run_points(base: ml_collections.ConfigDict, points: list[Point]) -> list[dict[str, Any]]:
    """Runs (or skips, when finished) every point; one record per point: its overrides, name, status, results."""
    records = []
    for i, point in enumerate(points):
        name = point_name(point)
        workdir = f"{base.workdir}/{name}"
        results = _finished(workdir)
        if results is not None:
            logging.info("sweep point %d/%d %s: finished earlier", i + 1, len(points), name)
            records.append({"point": point, "name": name, "status": "done", "results": results})
            continue
        logging.info("sweep point %d/%d: %s", i + 1, len(points), name)
        try:
            entry.run(point_config(base, point, workdir))
        except UserInputError as err:
            logging.error("sweep point %s failed: %s", name, err)
            records.append({"point": point, "name": name, "status": f"failed: {err}", "results": None})
            continue
        finally:
            gc.collect()  # the point's model and programs go before the next point loads its own
        records.append({"point": point, "name": name, "status": "done", "results": _finished(workdir)})
    return records


def _result_columns(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every method of the points' held-out tables, in first-seen order."""
    methods: dict[str, None] = {}
    for rec in records:
        for row in (rec["results"] or {}).get("table", []):
            methods.setdefault(row["method"], None)
    return list(methods)


def table_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): the swept keys, then each method's held-out accuracy (%), then the status."""
    keys = list(dict.fromkeys(k for rec in records for k in rec["point"]))
    methods = _result_columns(records)
    rows = []
    for rec in records:
        scores = {row["method"]: row["accuracy"] for row in (rec["results"] or {}).get("table", [])}
        rows.append(
            [_value_text(rec["point"].get(k, "")) for k in keys]
            + [f"{100 * scores[m]:.1f}" if m in scores else "" for m in methods]
            + [rec["status"]]
        )
    return keys + [f"{m} (%)" for m in methods] + ["status"], rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def plot(path: str, records: Sequence[dict[str, Any]]) -> None:
    """One panel per method: accuracy against the first swept key, one line per value of the other keys."""
    if not distributed.is_primary():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(k for rec in records for k in rec["point"]))
    methods = _result_columns(records)
    if not keys or not methods:
        return
    x_key, others = keys[0], keys[1:]
    x_values = list(dict.fromkeys(_value_text(rec["point"].get(x_key)) for rec in records))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 3.8), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        lines: dict[str, dict[str, float]] = {}
        for rec in records:
            scores = {row["method"]: row["accuracy"] for row in (rec["results"] or {}).get("table", [])}
            if method in scores:
                label = ", ".join(f"{k}={_value_text(rec['point'].get(k))}" for k in others) or method
                lines.setdefault(label, {})[_value_text(rec["point"].get(x_key))] = 100 * scores[method]
        for label, ys in lines.items():
            xs = [i for i, v in enumerate(x_values) if v in ys]
            ax.plot(xs, [ys[x_values[i]] for i in xs], "o-", label=label)
        ax.set_xticks(range(len(x_values)), x_values)
        ax.set_xlabel(x_key)
        ax.set_ylabel("held-out accuracy (%)")
        ax.set_title(method)
        if others:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def collect(workdir: str, records: Sequence[dict[str, Any]], title: str) -> str:
    """Writes sweep.md, sweep.csv and sweep.png into `workdir` (process 0) and returns the Markdown table."""
    header, rows = table_rows(records)
    table = markdown(header, rows)
    report.write_file(f"{workdir}/sweep.md", f"# {title}\n\n{table}")
    report.write_file(f"{workdir}/sweep.csv", csv_text(header, rows))
    plot(f"{workdir}/sweep.png", records)
    return table


def check_configs(base: ml_collections.ConfigDict, points: list[Point]) -> None:
    """Raises UserInputError for the first point whose overrides do not fit `base`."""
    for point in points:
        point_config(base, point, base.workdir)


def run(base: ml_collections.ConfigDict, points: list[Point], title: str) -> list[dict[str, Any]]:
    """Runs the sweep (every point checked first) and writes its table; returns the per-point records (what
    notebooks call)."""
    check_configs(base, points)
    records = run_points(base, points)
    print(collect(base.workdir, records, title))
    return records


def main(argv: list[str]) -> None:
    del argv
    cfg = entry._load_config()
    if cfg is None:
        raise app.UsageError("--config is required, e.g. --config configs/sweeps/demo_lr_rank.py")
    path = config_flags.get_config_filename(flags.FLAGS["config"])
    try:
        settings = distributed.parse_settings(cfg.get("distributed", {}))
        points = load_points(path)
        check_configs(cfg, points)  # before any work
    except UserInputError as err:
        entry._exit_bad_input(str(err))
    # The same supervision as `seal_jax.main` (a lost peer ends the sweep with one line).
    if settings.mode != "off" and not os.environ.get(entry._SUPERVISED_ENV):
        sys.exit(entry.supervise([sys.executable, "-m", "seal_jax.sweep", *sys.argv[1:]]))
    entry.setup_jax(cfg)
    records = run(cfg, points, f"sweep {path}: {len(points)} points")
    failed = [rec["name"] for rec in records if rec["status"] != "done"]
    if failed:
        print(f"error: {len(failed)} sweep point(s) failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=entry._parse_flags)
