"""`tiny_round.config` as a config file for `python -m seal_jax.main --config ...` (set --config.workdir)."""

from tests.golden.tiny_round import config


def get_config():
    return config("runs/tiny_round")
