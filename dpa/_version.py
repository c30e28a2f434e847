"""The package version and the name it is distributed under, in one place."""

__version__ = "0.1.0"

#: The name on PyPI: `dpa` there is an unrelated project, so `pip install dpa` would install the
#: wrong thing. The import package and the command stay `dpa`.
DISTRIBUTION = "dpa-potentials"


def pip_install(extras: str) -> str:
    """The command that installs dpa with `extras` (say "torch" or "jax,tf")."""
    return f"pip install '{DISTRIBUTION}[{extras}]'"
