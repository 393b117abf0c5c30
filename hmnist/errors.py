"""The errors hmnist reports to a user as one line, without a traceback."""


class HmnistError(Exception):
    """A fault in what the user gave: the message is one line."""


class DataError(HmnistError):
    """A data file is missing or damaged; the message names the file."""


class ModelError(HmnistError):
    """A saved model cannot be read or does not fit."""


class DivergenceError(HmnistError):
    """Training produced NaN or inf weights."""


class DownloadError(HmnistError):
    """No mirror gave a verified copy of a data file; names the file and mirrors."""
