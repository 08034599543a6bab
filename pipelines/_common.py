"""Shared by the stage scripts: argument parsing of the params file and one-line error reporting."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def parser(description: str | None) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return result


def stage_main(run: Callable[[], T]) -> Callable[[], T]:
    """Run a stage; a bad input (ValueError/FileNotFoundError, naming the file; also a registry that lacks what a
    report names, naming the server and the fix) exits 2 with one clear line."""

    @functools.wraps(run)
    def wrapper() -> T:
        from bdirnet.config import ConfigError

        try:
            return run()
        except (ConfigError, FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
