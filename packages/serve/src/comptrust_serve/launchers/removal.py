"""Removing one container: what the docker launcher, ``serve stop`` and the watchdog (:mod:`.reaper`) all do, kept
apart from :mod:`.docker` so that the watchdog imports only this (no import circle between the two)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = ["explain", "remove_container"]

logger = logging.getLogger(__name__)


def explain(exc: BaseException) -> str:
    """A Docker API error in one line: the engine's explanation where it gave one."""
    explanation = getattr(exc, "explanation", None)
    return " ".join(str(explanation or exc).split())


def remove_container(client: DockerClient, container_id: str, stop_timeout_s: float = 10.0) -> None:
    """Stop (SIGTERM, then SIGKILL after ``stop_timeout_s``) and remove a container; gone already is fine."""
    from docker.errors import APIError, NotFound

    for action, kwargs in (
        (client.api.stop, {"timeout": max(1, round(stop_timeout_s))}),
        (client.api.remove_container, {"force": True}),
    ):
        try:
            action(container_id, **kwargs)
        except NotFound:
            return
        except APIError as exc:  # gone meanwhile (podman says so with a 500), removal already in progress, ...
            logger.debug("%s %s: %s", action.__name__, container_id[:12], explain(exc))
