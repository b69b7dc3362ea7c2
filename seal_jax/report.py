"""Result tables, JSON and plots. Files are written by process 0 only (every process may call these)."""

from __future__ import annotations

import json
import os
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar([r[0] for r in rows], [100 * r[1] for r in rows], color="#4c72b0")
    left.set_ylabel("held-out accuracy (%)")
    left.set_title(title)
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
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
