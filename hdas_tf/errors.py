"""The types of a user's mistake: a bad flag or config value, a missing or invalid genotype or cluster file, a
data set that cannot serve the run, a run directory that cannot take the run. The mains report these as one
line and exit with status 2; any other exception is a bug and keeps its traceback (BUILD_NOTES "Errors and exit
codes"). Standard library only, so every package of hdas_tf may raise them.

Every type is a ValueError, so code that caught ValueError from the library before still does.
"""


class UserError(ValueError):
    """Something the user gave (a flag, a config field, a file, a data set, a run directory) cannot be used; the
    message names it and says what to do."""


class ConfigError(UserError):
    """A config field or flag value is out of range or contradicts another."""


class GenotypeError(UserError):
    """A genotype (registry name, file or document) is unknown, unreadable or invalid."""


class ClusterError(UserError):
    """A StacNAS cluster-set or edge-clusters file is missing, unreadable or invalid."""


class RunDirError(UserError):
    """The run directory cannot take this run: not writable, or it holds another run (and no --resume)."""
