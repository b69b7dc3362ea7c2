"""Result tables, JSON and plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def format_table(rows: Sequence[tuple[str, float, str]], title: str) -> str:
    """rows of (method, accuracy in [0, 1], note) -> a fixed-width text table in percent."""
    width = max(len(r[0]) for r in rows)
    lines = [title, f"{'method'.ljust(width)}  acc (%)  note", "-" * (width + 30)]
    lines += [f"{m.ljust(width)}  {100 * a:7.1f}  {n}" for m, a, n in rows]
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(payload, indent=1) + "\n")


def plot_results(
    path: str | Path, rows: Sequence[tuple[str, float, str]], rounds: Sequence[dict[str, Any]], title: str
) -> None:
    """Held-out accuracy per method (bars) and the ReST-EM reward per round (lines), one PNG."""
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
