"""What one ``infer()`` call did, named after llama.cpp's ``llama_decode`` return codes."""

from __future__ import annotations

from enum import Enum


class DecodeResult(Enum):
    """Outcome of one batched decode. Anything but ``OK`` leaves every conversation's tokens as
    they were; where llama.cpp lost the logits rows (``COMPUTE_ABORTED`` and other failures),
    a conversation that was waiting to sample queues its last token again, so the next
    ``infer()`` computes its logits anew."""

    OK = "ok"
    #: Not enough free KV cells for the batch: dispose or rewind a conversation and retry.
    NO_KV_SLOT = "no_kv_slot"
    #: The cancellation token fired (through llama.cpp's abort callback).
    COMPUTE_ABORTED = "compute_aborted"
    #: llama.cpp rejected the batch (bad positions or sequence ids); a bug in the caller.
    INVALID_INPUT_BATCH = "invalid_input_batch"
    #: The backend could not allocate the compute buffers.
    ALLOCATION_FAILED = "allocation_failed"
    #: Any other failure inside ``llama_decode``.
    DECODE_FAILED = "decode_failed"

    @property
    def ok(self) -> bool:
        return self is DecodeResult.OK

    @classmethod
    def from_code(cls, code: int) -> DecodeResult:
        """Map a ``llama_decode`` return value (see llama.h) onto the enum."""
        if code == 0:
            return cls.OK
        if code == 1:
            return cls.NO_KV_SLOT
        if code == 2:
            return cls.COMPUTE_ABORTED
        if code == -1:
            return cls.INVALID_INPUT_BATCH
        if code == -2:
            return cls.ALLOCATION_FAILED
        return cls.DECODE_FAILED
