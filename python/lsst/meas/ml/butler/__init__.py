"""Butler integration: storage classes, formatters, dataset names, repo helpers."""

from .names import *  # noqa: F401,F403
from .repo import *  # noqa: F401,F403

ensure_storage_classes()
