"""A model served elsewhere, by an OpenAI-compatible endpoint (``[models.NAME] endpoint``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.errors import PanechatError


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """``url``: the API's base (``http://host:port/v1``); ``model``: the name the endpoint
    knows the model by; ``api_key_env``: the environment variable that holds its key ("" for
    none: a local server)."""

    url: str
    model: str
    api_key_env: str = ""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise PanechatError(f"endpoint {self.url!r} must start with http:// or https://")

    @property
    def base(self) -> str:
        return self.url.rstrip("/")

    def headers(self) -> dict[str, str]:
        """The request headers, the key from its environment variable (raises PanechatError,
        one line, when that variable is not set)."""
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise PanechatError(
                    f"the endpoint's key is read from ${self.api_key_env}, which is not set — "
                    "export it before starting panechat"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers
