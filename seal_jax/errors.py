"""The one exception family that means "the user's input is wrong" (main exits 2 with its one-line message), and
the range check the static configs share."""

import math


class UserInputError(ValueError):
    """Bad config value, data file, checkpoint path or model type. Its message is one line."""


def require_positive(where: str, **values: float) -> None:
    """Raises ValueError naming the first of `values` that is not a finite number > 0."""
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{where}: {name}={value} must be a finite number > 0")
