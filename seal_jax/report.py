"""Result tables, JSON and plots. Files are written by process 0 only (every process may call these)."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Sequence
from typing import Any

from etils import epath

from seal_jax.engine import distributed
from seal_jax.engine.checkpoint import write_atomically


def format_table(rows: Sequence[tuple[str, float, str]], title: str) -> str:
    """rows of (method, accuracy in [0, 1], note) -> a fixed-width text table in percent."""
    width = max(len(r[0]) for r in rows)
    lines = [title, f"{'method'.ljust(width)}  acc (%)  note", "-" * (width + 30)]
    lines += [f"{m.ljust(width)}  {100 * a:7.1f}  {n}" for m, a, n in rows]
    return "\n".join(lines)


def set_title(ax: Any, title: str) -> None:
    """`title` over `ax`, wrapped to the axes' width (a long title would be cut at the figure's edges)."""
    width_in = ax.get_position().width * ax.figure.get_figwidth()
    ax.set_title(textwrap.fill(title, max(20, int(width_in * 12))), fontsize=10)


def write_file(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes `data` to `path` (local or `gs://`) on process 0 only, replacing the file atomically; the other
    processes return at once. For any file of a run besides the journal and checkpoints."""
    if distributed.is_primary():
        write_atomically(path, data)


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    write_file(path, json.dumps(payload, indent=1) + "\n")


def plot_results(
    path: str | os.PathLike,
    rows: Sequence[tuple[str, float, str]],
    rounds: Sequence[dict[str, Any]],
    title: str,
) -> None:
    """Held-out accuracy per method (bars) and the ReST-EM reward per round (lines), one PNG (process 0 only)."""
    if not distributed.is_primary():
        return
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar([r[0] for r in rows], [100 * r[1] for r in rows], color="#4c72b0")
    left.set_ylabel("held-out accuracy (%)")
    set_title(left, title)
    left.tick_params(axis="x", labelrotation=20)
    if rounds:
        x = [s["round"] for s in rounds]
        right.plot(x, [100 * s["mean_reward"] for s in rounds], "o-", label="mean reward")
        right.plot(x, [100 * s["mean_best_reward"] for s in rounds], "s--", label="best-of-N reward")
        right.set_xticks(x)
        right.legend()
    right.set_xlabel("ReST-EM round")
    right.set_ylabel("train reward (%)")
    right.set_title("reward per round")
    fig.tight_layout()
    save_figure(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Writes a matplotlib figure as PNG (local or `gs://`) and closes it."""
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, format="png", dpi=110)
    _pyplot().close(fig)


def plot_intervals(path: str | os.PathLike, table: Sequence[dict[str, Any]], title: str) -> None:
    """Accuracy per row with its 95% interval (rows with `accuracy` and `ci95` in [0, 1]), process 0 only."""
    if not distributed.is_primary():
        return
    plt = _pyplot()
    shown = [r for r in table if "ci95" in r]
    means = [100 * r["accuracy"] for r in shown]
    errors = [
        [m - 100 * r["ci95"][0] for m, r in zip(means, shown, strict=True)],
        [100 * r["ci95"][1] - m for m, r in zip(means, shown, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(shown)), 4))
    ax.bar([r["method"] for r in shown], means, yerr=errors, capsize=5, color="#4c72b0")
    ax.set_ylabel("accuracy (%), 95% bootstrap CI")
    set_title(ax, title)
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    save_figure(fig, path)


def plot_matrix(path: str | os.PathLike, mean: Sequence[Sequence[float | None]], title: str) -> None:
    """A heatmap of a (steps + 1) × passages accuracy matrix (None = not evaluated), process 0 only."""
    if not distributed.is_primary():
        return
    import numpy as np

    plt = _pyplot()
    values = np.array([[np.nan if v is None else 100 * v for v in row] for row in mean], float)
    fig, ax = plt.subplots(figsize=(1 + 0.7 * values.shape[1], 1 + 0.6 * values.shape[0]))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=max(1.0, float(np.nanmax(values))))
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xlabel("passage (in the order of the edits)")
    ax.set_ylabel("self-edits applied")
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    set_title(ax, title)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    save_figure(fig, path)
