"""``panechat api`` as its own process on loopback, for the tests that talk to it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from api.api_bench import free_port, server_process

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]

    def client(self, key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return json.loads(response.read())

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        request = urllib.request.Request(f"{self.url}{path}", body, headers or {}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read())

    def open_chats(self) -> int:
        return int(self.get("/health")["chats"])


def start_server(*args: str) -> Iterator[Server]:
    """``panechat api`` with ``args``, run by this interpreter, for as long as it is used."""
    port = free_port()
    command = [sys.executable, "-m", "tui", "api", "--port", str(port), *args]
    with server_process("panechat api", command, port) as running:
        yield Server(running.url.removesuffix("/v1"), running.process)
