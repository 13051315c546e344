"""The two ways a request fails that the HTTP layer turns into answers: 400 and 503."""

from __future__ import annotations


class ParamError(ValueError):
    """A request parameter is missing or malformed; the message names it and says why."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(f"{param}: {problem}")
        self.param = param
        self.problem = problem


class Unavailable(Exception):
    """A dependency (NATS or Redis) did not answer in time; nothing was stored, retry later."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
