from __future__ import annotations

from seal_jax.domains.arc.render import plan_caption, render_task
from seal_jax.domains.arc.self_edit import ORACLE_PLAN

from .conftest import generic_task


def test_render_writes_a_png(tmp_path):
    task = generic_task(3, n_tests=2)
    path = render_task(
        task,
        tmp_path / "task.png",
        predictions=[[task.test[0].output, task.test[0].input], [task.test[1].input]],
        caption=plan_caption(ORACLE_PLAN),
    )
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
    plain = render_task(task, tmp_path / "plain.png").read_bytes()
    assert plain.startswith(b"\x89PNG") and plain != data


def test_caption_lists_the_chosen_augmentations():
    caption = plan_caption(ORACLE_PLAN)
    assert "Chain(Flip(1), IncreaseResolution(2))" in caption and "RandomTranslateXY()" in caption
    assert "lr 0.0001, 2 epoch(s), loss on output tokens" in caption
