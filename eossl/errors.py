"""Errors eossl raises on bad input. Each message names the file or object and says what to do."""


class EosslError(ValueError):
    """Base class: bad input that eossl refuses to guess about."""


class DataError(EosslError):
    """A raster, chip folder or array that cannot be used as it is."""


class CheckpointError(EosslError):
    """A checkpoint that is missing, damaged, or made for other data than it is given."""


class ParameterError(EosslError):
    """A parameter (of a function, a config file or the command line) with a value it cannot take."""
