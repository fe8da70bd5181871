"""User-facing errors: the command line prints their message alone (no traceback unless ``--debug``)."""


class StyleBlendError(Exception):
    """A problem the user can fix: bad input file, missing model, wrong option."""


class DataError(StyleBlendError):
    """A style folder, image or ``prompt.json`` that cannot be used; the message names the file."""


class ModelLoadError(StyleBlendError):
    """A model folder or weight file that cannot be loaded; the message names the file."""


class ConfigError(StyleBlendError):
    """A configuration value this project does not support; the message names the key (and file)."""


class DivergedError(StyleBlendError):
    """Training or sampling produced NaN or Inf; the message names the stage and the step. Nothing is saved."""
