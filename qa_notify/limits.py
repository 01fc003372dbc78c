"""Process limits a server holding thousands of streams needs."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to the hard limit (each stream is a socket); return it.

    Many systems start processes with a soft limit of 1,024, which would cap a web process
    at about a thousand streams whatever ``worker_connections`` says.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit from %s to %s", soft, target)
    return soft
