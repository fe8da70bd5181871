"""StyleBlend in Jittor: a Stable Diffusion 2.x stack and the StyleBlend method, for teaching and reproduction."""
from .runtime import configure as _configure

_configure()  # Jittor's flags must be in the environment before any submodule imports jittor

__version__ = "0.1.0"
__all__ = ["load_sd", "write_tiny_sd"]


def __getattr__(name):
    if name in __all__:
        from .sd import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'styleblend' has no attribute {name!r}")
