"""pytest-xdist scheduling: every test of a target goes to one worker.

A target's VM and agent are per process, so a target split over two workers
boots twice and loads every policy twice. xdist's own `loadgroup` relies on
a node-id suffix that pytest 9.2 no longer carries, so the grouping here
reads the target id straight from the parameter part of each node id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest
from xdist.scheduler import LoadScopeScheduling


def target_of_nodeid(nodeid: str, target_ids: Iterable[str]) -> str | None:
    """The target id among the parameters of `nodeid` (`x[6.1-arm64-3]`), or None."""
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    params = nodeid[nodeid.rindex("[") + 1 : -1]
    # Parameter ids are joined with "-", which target ids contain too: a target
    # id must fill whole parameters (6.1-x86_64 is not in 6.12-x86_64).
    for target in sorted(target_ids, key=len, reverse=True):
        if re.search(rf"(?:^|-){re.escape(target)}(?:-|$)", params):
            return target
    return None


class TargetScheduling(LoadScopeScheduling):  # type: ignore[misc]
    """Load scheduling with a target's tests as one unit; other tests spread."""

    def __init__(
        self, config: pytest.Config, log: object, target_ids: Iterable[str]
    ) -> None:
        super().__init__(config, log)
        self.target_ids = tuple(target_ids)

    def _split_scope(self, nodeid: str) -> str:
        return target_of_nodeid(nodeid, self.target_ids) or nodeid
