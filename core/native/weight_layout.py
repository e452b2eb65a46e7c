"""Which weight layout a model load may use on this CPU, and why.

llama.cpp's CPU backend can put weights into extra buffer types that lay them out for faster
kernels: ``CPU_REPACK`` (Q4_0/Q4_K/IQ4_NL interleaved for AVX2/AVX-512 and Arm), and on builds
for Intel CPUs with AMX, ``AMX`` (tiles for the AMX matrix unit). On some AMX machines — cloud
VMs above all — llama.cpp's AMX matmul kills the process (SIGSEGV in
``ggml_backend_amx_mul_mat``, or SIGILL at ``tilezero``; llama.cpp issue 20824), and nothing
the CPU or the kernel reports tells those machines apart. So ``auto`` lets AMX hold weights
only where a trial decode in a child process passed on this CPU (:mod:`core.native.amx_trial`), and
keeps CPU repacking either way.

:func:`choose_layout` decides from facts it is given (pure); :func:`resolve_layout` gathers
them (the build's buffer types, the stored or fresh trial verdict); :func:`withholding` applies
a choice to the loads made inside it (:mod:`core.native.ggml_registry`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from enum import StrEnum

from core.errors import InvalidParamsError
from core.native.amx_trial import (
    TrialOutcome,
    TrialRecords,
    TrialVerdict,
    run_trial,
    verdict_for_this_machine,
)
from core.native.ggml_registry import RegistryUnavailableError, registry

logger = logging.getLogger("panechat.weight_layout")

#: ggml's name for the AMX buffer type (``ggml_backend_amx_buffer_type``).
AMX_BUFFER_TYPE = "AMX"


class WeightLayout(StrEnum):
    """``[model] weight_layout``: how CPU-resident weights may be laid out."""

    AUTO = "auto"  # every layout the build offers, AMX only after it passed a trial here
    AMX = "amx"  # every layout the build offers, AMX included: llama.cpp's own default
    REPACK = "repack"  # CPU repacking, never AMX
    PLAIN = "plain"  # weights as stored in the file (llama.cpp's --no-repack)

    @classmethod
    def parse(cls, value: object) -> WeightLayout:
        """A layout from a setting, or an InvalidParamsError that lists the choices."""
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        choices = ", ".join(repr(m.value) for m in cls)
        raise InvalidParamsError(f"weight_layout must be one of {choices}, got {value!r}")


def add_layout_option(
    parser: argparse.ArgumentParser, default: WeightLayout | None = WeightLayout.AUTO
) -> None:
    """``--weight-layout`` for the command lines that load a model (demo, bench, doctor);
    ``default=None`` lets a caller fall back to its config."""

    def layout(text: str) -> WeightLayout:
        try:
            return WeightLayout.parse(text)
        except InvalidParamsError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parser.add_argument(
        "--weight-layout",
        type=layout,
        metavar="{" + ",".join(WeightLayout) + "}",
        default=default,
        help="how CPU weights are laid out: auto (default), amx, repack or plain, "
        "as [model] weight_layout",
    )


@dataclass(frozen=True, slots=True)
class LayoutChoice:
    """What a load will use: the buffer types it may fill, those withheld, and why."""

    requested: WeightLayout
    offered: tuple[str, ...] | None  # the build's extra buffer types; None: could not be read
    withheld: tuple[str, ...]
    reason: str
    verdict: TrialVerdict | None = None  # the AMX trial's, where auto needed one

    @property
    def used(self) -> tuple[str, ...]:
        return tuple(name for name in self.offered or () if name not in self.withheld)

    @property
    def effective(self) -> WeightLayout:
        """The layout in effect: AMX only if AMX may hold weights, PLAIN if nothing may."""
        if AMX_BUFFER_TYPE in self.used:
            return WeightLayout.AMX
        return WeightLayout.REPACK if self.used else WeightLayout.PLAIN

    @property
    def needs_trial(self) -> bool:
        """True when ``auto`` cannot decide without a trial of AMX on this CPU."""
        return self.requested is WeightLayout.AUTO and AMX_BUFFER_TYPE in (self.offered or ())

    def leaks(self, buffers: Collection[str]) -> tuple[str, ...]:
        """Withheld buffer types that a load's buffers show all the same."""
        return tuple(name for name in self.withheld if name in buffers)

    def all_off(self, why: str) -> LayoutChoice:
        """The same request with every extra buffer type off (``use_extra_bufts = False``)."""
        return replace(self, withheld=self.offered or (), reason=f"{self.reason}; {why}")

    def summary(self) -> str:
        """One line: "repack (auto): <reason>"."""
        asked = "" if self.requested is self.effective else f" ({self.requested})"
        return f"{self.effective}{asked}: {self.reason}"


def choose_layout(
    requested: WeightLayout,
    offered: Sequence[str] | None,
    verdict: TrialVerdict | None = None,
) -> LayoutChoice:
    """Decide which of the ``offered`` buffer types a load may use (None: the build's list
    could not be read, so none: plain is always safe).

    ``verdict`` is the AMX trial's outcome on this CPU; only ``auto`` on a build that offers
    AMX reads it, and with none it keeps AMX out (call again once the trial has run)."""
    if offered is None:
        why = "could not read this llama.cpp build's weight layouts, so none is used"
        return LayoutChoice(requested, None, (), f"{why}; weights stay as stored in the file")
    offered = tuple(offered)
    has_amx = AMX_BUFFER_TYPE in offered
    amx_out = (AMX_BUFFER_TYPE,) if has_amx else ()

    def choice(withheld: tuple[str, ...], why: str) -> LayoutChoice:
        used = [name for name in offered if name not in withheld]
        uses = f"uses {', '.join(used)}" if used else "weights stay as stored in the file"
        return LayoutChoice(requested, offered, withheld, f"{why}; {uses}", verdict)

    if not offered:
        return choice((), "this llama.cpp build offers no repacked layouts")
    if requested is WeightLayout.PLAIN:
        return choice(offered, "asked for")
    if requested is WeightLayout.REPACK:
        return choice(amx_out, "asked for, AMX kept out" if has_amx else "asked for")
    if requested is WeightLayout.AMX:
        if has_amx:
            return choice((), "asked for; AMX is not tried first")
        return choice((), "asked for, but this build has no AMX kernels")
    if not has_amx:
        return choice((), "this llama.cpp build has no AMX kernels")
    if verdict is None:
        return choice(amx_out, "AMX not tried on this CPU yet, so kept out")
    if verdict.outcome is TrialOutcome.PASSED:
        return choice((), f"AMX passed a trial decode on this CPU on {verdict.when}")
    if verdict.outcome is TrialOutcome.INCONCLUSIVE:
        return choice(
            amx_out, f"the AMX trial could not run ({verdict.detail}), so AMX is kept out"
        )
    return choice(
        amx_out, f"AMX {verdict.describe()} on this CPU on {verdict.when}, so it is kept out"
    )


def offered_buffer_types() -> tuple[str, ...] | None:
    """This build's extra buffer types, or None (with a warning) where they cannot be read."""
    try:
        return registry().cpu_extra_buffer_types()
    except RegistryUnavailableError as e:
        logger.warning("%s", e)
        return None


def resolve_layout(
    requested: WeightLayout,
    records: TrialRecords | None = None,
    run: Callable[[], TrialVerdict] = run_trial,
    offered: Sequence[str] | None = None,
) -> LayoutChoice:
    """:func:`choose_layout` for this build (or the ``offered`` buffer types) and CPU, running
    the AMX trial if ``auto`` needs it and no verdict is stored yet."""
    choice = choose_layout(requested, offered_buffer_types() if offered is None else offered)
    if choice.needs_trial:
        verdict = verdict_for_this_machine(records, run)
        choice = choose_layout(requested, choice.offered, verdict)
    return choice


def withholding(choice: LayoutChoice) -> AbstractContextManager[None]:
    """Keep the choice's withheld buffer types out of the loads made inside the block; check
    the load's buffers with :meth:`LayoutChoice.leaks` afterwards."""
    if not choice.withheld:
        return nullcontext()
    return registry().withholding_cpu_buffer_types(choice.withheld)
