"""Per-frame tracking outputs and the bounded store of the tracked (non-conditioning) frames.

The official predictor keeps every frame's output (spatial memory, low-res mask, pointer) for the
whole video. Tracking frame ``t`` only reads the ``num_maskmem - 1`` memories and the
``max_obj_ptrs_in_encoder - 1`` pointers next to it, so :class:`FrameStore` keeps a window of the
most recently used frames in RAM; a frame that leaves the window is written to a temporary file
(``spill``) and read back when it is asked for again (a correction click on an old frame, a
re-propagation from it), so the answers stay the official ones. Without a spill folder
(streaming) a frame that leaves the window is forgotten.
"""
from __future__ import annotations

import shutil
import tempfile
import weakref
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path

import torch


@dataclass
class FrameOutput:
    """One object's output on one frame (the official compact ``current_out``).

    ``pred_masks`` (1, 1, 4h, 4w) float32 low-res logits (after hole filling), ``obj_ptr``
    (1, C), ``object_score_logits`` (1, 1), ``maskmem_features`` (1, mem_dim, h, w) bfloat16
    once the memory encoder ran, else None; ``decoder_ious`` (1, M) and ``multimask`` record the
    decoder's decision (None for a mask used as output)."""

    pred_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: torch.Tensor | None = None
    decoder_ious: torch.Tensor | None = None
    multimask: bool | None = None

    def nbytes(self) -> int:
        """Bytes held by the tensors."""
        return sum(t.numel() * t.element_size() for f in fields(self)
                   if isinstance(t := getattr(self, f.name), torch.Tensor))


class SpillFolder:
    """A temporary folder for spilled frames, removed when closed or garbage-collected."""

    def __init__(self, parent: str | Path | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="segany-video-", dir=parent))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def close(self) -> None:
        self._finalizer()


class FrameStore:
    """Frame index -> :class:`FrameOutput` of one object, ``window`` of them in RAM.

    Reads and writes move a frame to the most recent end; the least recent frame beyond the
    window goes to ``spill`` (a file per frame, written once, removed when the frame is
    overwritten) or, without ``spill``, is dropped."""

    def __init__(self, window: int, spill: SpillFolder | None = None, name: str = "obj") -> None:
        self.window = max(1, int(window))
        self.spill = spill
        self.name = name
        self._ram: OrderedDict[int, FrameOutput] = OrderedDict()
        self._on_disk: set[int] = set()
        self.spilled = self.loaded = 0  # counters (tests, benchmark)

    def _path(self, frame_idx: int) -> Path:
        assert self.spill is not None
        return self.spill.path / f"{self.name}_{frame_idx}.pt"

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._ram or frame_idx in self._on_disk

    def __len__(self) -> int:
        return len(self._ram.keys() | self._on_disk)

    def frames(self) -> list[int]:
        """Every stored frame index, sorted."""
        return sorted(self._ram.keys() | self._on_disk)

    def in_ram(self) -> list[int]:
        return list(self._ram)

    def get(self, frame_idx: int) -> FrameOutput | None:
        out = self._ram.get(frame_idx)
        if out is not None:
            self._ram.move_to_end(frame_idx)
            return out
        if frame_idx not in self._on_disk:
            return None
        data = torch.load(self._path(frame_idx), weights_only=True)
        out = FrameOutput(**data)
        self.loaded += 1
        self._ram[frame_idx] = out
        self._evict()
        return out

    def __setitem__(self, frame_idx: int, out: FrameOutput) -> None:
        self._forget_disk(frame_idx)
        self._ram[frame_idx] = out
        self._ram.move_to_end(frame_idx)
        self._evict()

    def pop(self, frame_idx: int) -> FrameOutput | None:
        out = self.get(frame_idx)
        self._ram.pop(frame_idx, None)
        self._forget_disk(frame_idx)
        return out

    def clear(self) -> None:
        for frame_idx in list(self._on_disk):
            self._forget_disk(frame_idx)
        self._ram.clear()

    def _forget_disk(self, frame_idx: int) -> None:
        if frame_idx in self._on_disk:
            self._on_disk.discard(frame_idx)
            self._path(frame_idx).unlink(missing_ok=True)

    def _evict(self) -> None:
        while len(self._ram) > self.window:
            frame_idx, out = self._ram.popitem(last=False)
            if self.spill is None or frame_idx in self._on_disk:
                continue
            data = {f.name: getattr(out, f.name) for f in fields(out)}
            torch.save(data, self._path(frame_idx))
            self._on_disk.add(frame_idx)
            self.spilled += 1

    def ram_bytes(self) -> int:
        """Bytes of the frames held in RAM."""
        return sum(out.nbytes() for out in self._ram.values())
