"""In-call sweeps of the inner loop: `--config.eval.inner_grid="learning_rate=1e-3,3e-3;epochs=3,5"`.

A grid is a product of axes (`;` between axes, `,` between values) over the inner loop's per-adapter settings:
`learning_rate`, `epochs` and `warmup_steps`. The held-out evaluation applies every self-edit once per setting,
on the same self-edits and seeds, and the evaluator plans all of them together into its K-adapter calls (the
engine takes a learning rate, step count and warmup per adapter), so a grid costs adapter slots, not new
programs. Each setting is a row of the held-out table and its journal keys carry its name, so a resumed run finds
its finished work.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from seal_jax.domains.base import Invalid, SelfEdit
from seal_jax.errors import UserInputError

# axis -> the type of its values
AXES = {"learning_rate": float, "epochs": int, "warmup_steps": int}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One grid point: the InnerHparams fields it overrides (`values`), and its name in keys and tables."""

    values: tuple[tuple[str, float | int], ...]

    @property
    def name(self) -> str:
        return ",".join(f"{axis}={value:g}" for axis, value in self.values)

    def apply(self, parsed: SelfEdit | Invalid | None) -> SelfEdit | Invalid | None:
        """The self-edit trained with this setting (an Invalid or no-update self-edit is unchanged)."""
        if not isinstance(parsed, SelfEdit):
            return parsed
        return dataclasses.replace(parsed, hparams=dataclasses.replace(parsed.hparams, **dict(self.values)))


def _value(axis: str, text: str) -> float | int:
    try:
        value = AXES[axis](text)
    except ValueError:
        raise UserInputError(f"eval.inner_grid: {axis}={text!r} is not a {AXES[axis].__name__}") from None
    if value < 0 or (value == 0 and axis != "warmup_steps"):
        raise UserInputError(
            f"eval.inner_grid: {axis}={text} must be {'>= 0' if axis == 'warmup_steps' else '> 0'}"
        )
    return value


def parse(text: str) -> list[Setting]:
    """ "learning_rate=1e-3,3e-3;epochs=3" -> the product's settings, in order (an empty text: none)."""
    axes: dict[str, list[float | int]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        axis, sep, values = part.partition("=")
        axis = axis.strip()
        if not sep or axis not in AXES:
            raise UserInputError(
                f"eval.inner_grid: {part!r} is not <axis>=<values> with an axis among {', '.join(AXES)}"
            )
        if axis in axes:
            raise UserInputError(f"eval.inner_grid names {axis} twice")
        axes[axis] = [_value(axis, v.strip()) for v in values.split(",") if v.strip()]
        if not axes[axis]:
            raise UserInputError(f"eval.inner_grid: {axis} has no values")
    settings = [Setting(tuple(zip(axes, combo, strict=True))) for combo in itertools.product(*axes.values())]
    names = [s.name for s in settings]
    if len(set(names)) < len(names):
        raise UserInputError(f"eval.inner_grid repeats a setting: {text!r}")
    return settings if axes else []


def method_key(method: str, setting: Setting | None) -> str:
    """The journal prefix of `method` trained with `setting` ("seal@learning_rate=0.001"); None: the run's own."""
    return method if setting is None else f"{method}@{setting.name}"


def row_label(row: str, setting: Setting | None) -> str:
    """A held-out row's label: the run's own setting as `row`, a grid setting as `row [name]`."""
    return row if setting is None else f"{row} [{setting.name}]"


def rows(row: str, note: str, accuracies: dict[Setting | None, float]) -> list[tuple[str, float, str]]:
    """Held-out table rows (label, accuracy, note) of one method, one per setting."""
    return [(row_label(row, g), acc, note) for g, acc in accuracies.items()]


def with_settings(settings: Sequence[Setting]) -> list[Setting | None]:
    """The run's own setting (None) followed by the grid's."""
    return [None, *settings]
