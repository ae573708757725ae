"""Errors that kdnb raises for bad input.

Every error names the file, line or key at fault and what was expected, so that the
pipeline (``python -m kdnb.pipeline``) can print it as one paragraph and exit non-zero.
"""


class KdnbError(Exception):
    """Base class of kdnb's user-facing errors (bad config, bad data, missing inputs)."""


class ConfigError(KdnbError, ValueError):
    """A parameter file, key or value is wrong (unknown task/profile/key, bad type or range)."""


class DataError(KdnbError, ValueError):
    """A data file is missing or malformed (names the file and the 1-based line)."""


class StageInputError(KdnbError, FileNotFoundError):
    """A stage needs the output of an earlier stage that does not exist yet."""
