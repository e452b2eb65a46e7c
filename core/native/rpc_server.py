"""``panechat rpc-server``: serve this machine's CPU or GPU to other panechat (or llama.cpp)
clients over llama.cpp's RPC protocol, in this process: no separate binary to build."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from core.errors import PanechatError
from core.executor.params import default_threads
from core.native.rpc import DEFAULT_PORT, RpcEndpoint, device_handle, require_rpc, serve

WARNING = (
    "warning: the RPC protocol has no authentication or encryption — anyone who can reach "
    "{endpoint} can use this machine's {device} and read what it computes; use it only on a "
    "trusted network"
)


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Serve this machine's device to panechat or llama.cpp clients."
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    p.add_argument("--device", default="CPU", help="CPU, CUDA0, Vulkan0, … (CPU)")
    p.add_argument("--cache", metavar="DIR", type=Path, help="cache tensors sent before here")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core)")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m core.native.rpc_server") -> int:
    args = parser(prog).parse_args(argv)
    try:
        endpoint = RpcEndpoint.parse(f"{args.host}:{args.port}")
        require_rpc()
        device_handle(args.device)  # an unknown device fails before anything is printed
        if not endpoint.is_loopback:
            print(WARNING.format(endpoint=endpoint, device=args.device), file=sys.stderr)
        threads = args.threads or default_threads()
        failure: list[PanechatError] = []

        def run() -> None:
            try:
                serve(endpoint, args.device, args.cache, threads)
            except PanechatError as e:
                failure.append(e)

        # llama.cpp serves in the calling thread until the process ends; from a thread of its
        # own, Ctrl-C still reaches Python.
        server = threading.Thread(target=run, name="panechat-rpc-server", daemon=True)
        print(f"{prog}: serving {args.device} at {endpoint} (Ctrl-C stops)", flush=True)
        server.start()
        server.join()
        if failure:
            raise failure[0]
        print(f"{prog}: error: llama.cpp stopped serving at {endpoint}", file=sys.stderr)
        return 1
    except PanechatError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
