"""The headless demo streams several conversations and reports aggregate speed."""

from __future__ import annotations

import subprocess
import sys


def test_demo_streams_every_prompt() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "--max-tokens",
            "8",
            "What is two plus two?",
            "Name a fruit.",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "[0] What is two plus two?" in done.stdout
    assert "[1] Name a fruit." in done.stdout
    assert "tokens/s aggregate" in done.stdout


def test_demo_bad_model_path_is_one_line_on_stderr() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "core", "--model", "/nonexistent.gguf", "hi"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "model file not found: /nonexistent.gguf" in done.stderr
