"""``panechat api``: the config's models served over OpenAI's chat-completions API."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from api.chat_runs import ChatRuns
from api.prompt_cache import PromptCache
from api.served_models import ServedModels
from api.server import RUNS, ServerSettings, build_app
from core import PanechatError
from core.chat import ChatConfig, ChatEngineGroup
from core.models.progress_line import ProgressLine

if TYPE_CHECKING:
    from tui.config import AppConfig
from core.sampling.sampling import SamplingParams

#: Requests that may wait for a slot, per slot, before the server answers 503.
QUEUE_PER_SLOT = 4


def api_parser(prog: str = "panechat api") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the config's models over OpenAI's chat-completions API; "
        "concurrent requests decode in one batch.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (8080)")
    parser.add_argument("--config", metavar="PATH", help="extra config.toml, read last")
    parser.add_argument("--model", metavar="PATH", help="GGUF model file (default: [model])")
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help="requests must send 'Authorization: Bearer KEY' (required off loopback)",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="requests decoded at once (default: n_seq_max of [context])",
    )
    parser.add_argument(
        "--cache-tokens",
        type=int,
        metavar="N",
        help="tokens of finished chats kept for their next turn (default: half the context; "
        "0: none)",
    )
    parser.add_argument(
        "--frame-stretch",
        type=float,
        default=0.0,
        metavar="X",
        help="how much a new prompt may slow the replies streaming ([context] "
        "max_frame_stretch; default 0: new prompts fill whole batches, as llama-server's do)",
    )
    parser.add_argument(
        "--queue",
        type=int,
        metavar="N",
        help=f"requests that may wait for a slot before a 503 ({QUEUE_PER_SLOT} per slot)",
    )
    return parser


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (as ``panechat serve`` and RPC decide)."""
    from core.native.rpc import RpcEndpoint

    return RpcEndpoint(host, 1).is_loopback


def with_frame_stretch(config: AppConfig, stretch: float) -> AppConfig:
    """``config`` with every model's ``max_frame_stretch`` set: a server's clients wait for
    their first token, and a small cap makes prompts arriving together trickle into the batch
    a few tokens a frame (the app keeps it, for smooth panes)."""
    if stretch != 0 and stretch <= 1:
        raise PanechatError("--frame-stretch must be 0 (no cap) or more than 1")
    models = {
        name: replace(spec, context=replace(spec.context, max_frame_stretch=stretch))
        for name, spec in config.models.items()
    }
    context = replace(config.context, max_frame_stretch=stretch)
    return replace(config, context=context, models=models)


def api_command(argv: list[str]) -> int:
    from tui.command_line_models import with_models
    from tui.config import load_config
    from tui.default_model import DefaultModel, default_model_file
    from tui.serve import check_bindable

    args = api_parser().parse_args(argv)
    if not is_loopback(args.host) and not args.api_key:
        print(
            f"panechat api: error: {args.host} is reachable from other machines — "
            "give --api-key KEY (or listen on 127.0.0.1)",
            file=sys.stderr,
        )
        return 2
    try:
        check_bindable(args.host, args.port)  # a port in use: one line, before the model loads
        config = load_config(args.config)
        config = with_models(config, [args.model] if args.model else [], None)
        config = with_frame_stretch(config, args.frame_stretch)
        parallel = args.parallel or config.context.n_seq_max
        if not 1 <= parallel <= config.context.n_seq_max:
            raise PanechatError(
                f"--parallel must be between 1 and {config.context.n_seq_max} "
                "(n_seq_max in [context])"
            )
        if args.queue is not None and args.queue < 0:
            raise PanechatError("--queue must be 0 or more")
        cache_tokens = config.context.n_ctx // 2 if args.cache_tokens is None else args.cache_tokens
        if cache_tokens < 0:
            raise PanechatError("--cache-tokens must be 0 or more")
        with ProgressLine(f"loading {default_model_file(config)}") as progress:
            default = DefaultModel.load(config, saved=False, progress=progress)
    except PanechatError as e:
        print(f"panechat api: error: {e}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(
            f"panechat api: warning: listening on {args.host}, reachable from other machines; "
            "requests need the API key",
            file=sys.stderr,
        )
    models = ServedModels(
        config.default_alias or Path(config.model_path or "default").stem,
        tuple(config.named_models()),
    )
    engine = default.engine()
    group = ChatEngineGroup(
        engine, lambda _event: None, specs=config.named_models(), default_name=config.default_alias
    )
    settings = ServerSettings(
        defaults=ChatConfig("api", sampling=SamplingParams()),
        max_tokens=config.context.n_ctx,
        api_key=args.api_key,
    )

    async def start(app: web.Application) -> None:
        import asyncio

        app[RUNS] = ChatRuns(
            group,
            models,
            asyncio.get_running_loop(),
            parallel=parallel,
            queue_limit=args.queue if args.queue is not None else QUEUE_PER_SLOT * parallel,
            sequences=config.context.n_seq_max,
            cache=PromptCache(cache_tokens),
        )
        group.start()

    app = build_app(settings, start)
    try:
        web.run_app(
            app,
            host=args.host,
            port=args.port,
            print=lambda _text: print(
                f"panechat api: serving {', '.join(models.names)} on "
                f"http://{args.host}:{args.port}/v1 (Ctrl+C stops)",
                file=sys.stderr,
            ),
        )
    except OSError as e:
        print(
            f"panechat api: error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr
        )
        return 2
    finally:
        if group.shutdown():
            default.release(engine)
            default.close()
    print("panechat api: stopped", file=sys.stderr)
    return 0
