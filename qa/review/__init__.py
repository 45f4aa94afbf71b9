"""The review workflow: routing into tiered queues, claims, decisions, appeals, calibration,
and the people who do it."""

from .queue import *  # noqa: F401,F403 - the package is the review API
from .queue import __all__  # noqa: F401
