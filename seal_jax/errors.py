"""The one exception family that means "the user's input is wrong" (main exits 2 with its one-line message)."""


class UserInputError(ValueError):
    """Bad config value, data file, checkpoint path or model type. Its message is one line."""
