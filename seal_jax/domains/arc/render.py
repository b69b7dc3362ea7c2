"""PNG pictures of an ARC task (demos, tests, predicted attempts) in the standard ARC palette.

Uses matplotlib's object API with the Agg canvas (no pyplot state), so it is safe in scripts and tests.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from seal_jax.domains.arc.augment import GROUPS
from seal_jax.domains.arc.grids import ArcTask, Grid
from seal_jax.domains.arc.self_edit import SelfEditPlan

# Colors 0-9: black, blue, red, green, yellow, grey, magenta, orange, sky, maroon.
PALETTE = (
    "#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
    "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25",
)  # fmt: skip
_CMAP = ListedColormap(PALETTE)
_NORM = BoundaryNorm(np.arange(-0.5, 10), _CMAP.N)
_PANEL_INCHES = 2.0
_CAPTION_LINE_INCHES = 0.16  # 8-pt monospace caption
_CAPTION_CHAR_INCHES = 0.075


def plan_caption(plan: SelfEditPlan) -> str:
    """A caption listing a self-edit's augmentations (by group) and its training settings."""
    lines = [f"{group}: {', '.join(a.name for a in GROUPS[group])}" for group in plan.groups.names()]
    loss = "all tokens" if plan.loss_on_all_tokens else "output tokens"
    settings = f"lr {plan.learning_rate:g}, {plan.epochs} epoch(s), loss on {loss}"
    return "\n".join([*(lines or ["no augmentation"]), settings])


def _draw(ax, grid: Grid | None, title: str) -> None:
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if grid is None:
        ax.text(0.5, 0.5, "?", ha="center", va="center", fontsize=14)
        return
    grid = np.asarray(grid)
    ax.imshow(grid, cmap=_CMAP, norm=_NORM, interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, grid.shape[1]), minor=True)
    ax.set_yticks(np.arange(-0.5, grid.shape[0]), minor=True)
    ax.grid(which="minor", color="#555555", linewidth=0.5)
    ax.tick_params(which="minor", length=0)


def render_task(
    task: ArcTask,
    path: str | Path,
    predictions: Sequence[Sequence[Grid]] | None = None,
    caption: str = "",
) -> Path:
    """Writes a PNG of `task`: one column per demo and per test input (input on top, output below), then a row
    per attempt with `predictions[i]` (the attempts for test i) under test i; `caption` goes at the bottom."""
    n_attempts = max((len(p) for p in predictions), default=0) if predictions else 0
    columns = [(f"demo {i}", ex) for i, ex in enumerate(task.train)]
    columns += [(f"test {i}", ex) for i, ex in enumerate(task.test)]
    n_rows = 2 + n_attempts
    width = _PANEL_INCHES * len(columns)
    caption = "\n".join(
        textwrap.fill(line, int(width / _CAPTION_CHAR_INCHES)) for line in caption.splitlines()
    )
    n_caption_lines = caption.count("\n") + 1 if caption else 0
    fig = Figure(figsize=(width, _PANEL_INCHES * n_rows + _CAPTION_LINE_INCHES * n_caption_lines))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, len(columns), squeeze=False)
    for col, (name, ex) in enumerate(columns):
        _draw(axes[0, col], ex.input, f"{name} input")
        _draw(axes[1, col], ex.output, f"{name} output")
        test_index = col - len(task.train)
        attempts = predictions[test_index] if predictions and 0 <= test_index < len(predictions) else ()
        for k in range(n_attempts):
            if k < len(attempts):
                _draw(axes[2 + k, col], attempts[k], f"attempt {k + 1}")
            else:
                axes[2 + k, col].set_axis_off()
    fig.suptitle(task.id)
    caption_height = _CAPTION_LINE_INCHES * n_caption_lines / fig.get_figheight()
    if caption:
        fig.text(0.01, 0.005, caption, fontsize=8, va="bottom", ha="left", family="monospace")
    fig.tight_layout(rect=(0, caption_height, 1, 1))
    path = Path(path)
    fig.savefig(path, format="png", dpi=80)
    return path
