"""Which devices a model's offloaded layers go to: this machine's GPUs, and RPC servers'.

llama.cpp offloads to every GPU-like device in ggml's registry unless a load names its own
list. Once an RPC server has been added (the registry is per process), every later load would
spread onto it too, so each load here names its devices: the local GPUs, plus its own RPC
servers' devices. ``tensor_split`` gives each device's share of the layers, in that order
(llama.cpp's default: in proportion to free memory).
"""

from __future__ import annotations

import argparse
import ctypes
from dataclasses import dataclass

import llama_cpp

from core.errors import InvalidParamsError
from core.native.ggml_registry import Device
from core.native.rpc import (
    RpcEndpoint,
    added_devices,
    any_servers_added,
    describe,
    local_devices,
    rpc_devices,
)


@dataclass(frozen=True, slots=True)
class DevicePlacement:
    """A model's RPC servers and its split across devices."""

    rpc: tuple[RpcEndpoint, ...] = ()
    tensor_split: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if any(not share >= 0 for share in self.tensor_split):
            raise InvalidParamsError("tensor_split shares must be numbers >= 0, e.g. [1, 3]")
        if self.tensor_split and not sum(self.tensor_split) > 0:
            raise InvalidParamsError("tensor_split needs at least one share above 0")
        if len(self.tensor_split) > llama_cpp.llama_max_devices():
            raise InvalidParamsError(
                f"tensor_split has {len(self.tensor_split)} shares; llama.cpp takes at most "
                f"{llama_cpp.llama_max_devices()}"
            )

    @classmethod
    def parse(
        cls, servers: str | list[str], tensor_split: list[float] | None = None
    ) -> DevicePlacement:
        """From ``--rpc host:port,host:port`` or a config list."""
        items = servers.split(",") if isinstance(servers, str) else servers
        endpoints = tuple(RpcEndpoint.parse(item) for item in items if item.strip())
        return cls(endpoints, tuple(float(x) for x in tensor_split or ()))

    def connect(self) -> None:
        """Add this placement's RPC servers (once per process); fails with one line when one
        does not answer or the build has no RPC."""
        if self.rpc:
            rpc_devices(self.rpc)

    @property
    def rpc_devices(self) -> tuple[Device, ...]:
        """The RPC servers' devices with their memory (each asks its server)."""
        return describe(added_devices(self.rpc))

    def apply(self, params: llama_cpp.llama_model_params) -> tuple[object, ...]:
        """Point a load's parameters at this placement; returns the arrays they point at,
        which must outlive the load."""
        kept: list[object] = []
        if self.rpc or any_servers_added():
            devices = (*local_devices(), *added_devices(self.rpc))
            array = (ctypes.c_void_p * (len(devices) + 1))(*devices, None)
            params.devices = ctypes.cast(array, ctypes.c_void_p)  # type: ignore[assignment]
            kept.append(array)
        if self.tensor_split:
            shares = (ctypes.c_float * llama_cpp.llama_max_devices())(*self.tensor_split)
            params.tensor_split = shares
            kept.append(shares)
        return tuple(kept)


def add_placement_options(parser: argparse.ArgumentParser) -> None:
    """``--rpc`` and ``--tensor-split``, for every command that loads a model."""
    parser.add_argument(
        "--rpc",
        default="",
        metavar="HOST:PORT,...",
        help="split the model's layers across these `panechat rpc-server`s (and local GPUs)",
    )
    parser.add_argument(
        "--tensor-split",
        default="",
        metavar="N,N,...",
        help="each device's share of the layers: local GPUs first, then the RPC servers",
    )


def placement_from_args(
    args: argparse.Namespace, configured: DevicePlacement | None = None
) -> DevicePlacement:
    """--rpc and --tensor-split; without --rpc, the ``configured`` placement (a config
    file's), if any."""
    if configured is not None and not args.rpc:
        return configured
    try:
        split = [float(x) for x in args.tensor_split.split(",") if x.strip()]
    except ValueError as e:
        raise InvalidParamsError("--tensor-split takes numbers, e.g. 1,3") from e
    return DevicePlacement.parse(args.rpc, split)
