"""Whole-step CUDA graphs: capture one training (or inference) step once, then replay it.

At MNIST scale a training step is a few dozen small kernels, and the GPU spends most of the step
waiting for the host to launch them (Python, autograd bookkeeping, Triton's launcher). A CUDA
graph records the whole step's kernel launches once and replays them with a single host call.

    import tinydl as td
    from tinydl import nn, optim, functional as F
    from tinydl.cuda_graph import CudaGraphStep

    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = optim.Adam(model.parameters(), lr=1e-3, capturable=True)  # its step count on the device

    def train_step(x, y):                  # x, y: td.Tensor views of the static input buffers
        opt.zero_grad()                    # the grads are allocated inside the graph's memory pool
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()                         # updates the parameters in place
        return loss                        # static output: overwritten by every replay

    step = CudaGraphStep(train_step)       # calls 1-3 run eagerly (warm-up), call 4 captures
    for x, y in loader:                    # every batch must have the first batch's shape and dtype
        loss = step(x, y)                  # one real training step per call, whatever the phase
    print(loss.item())                     # .clone() an output to keep it past the next replay

Every call is exactly one step on its inputs: the first ``warmup`` calls run ``step_fn`` eagerly
(on a side stream, so Triton compiles every kernel and lazily created state -- momentum buffers,
Adam moments, the optimizer's flat buffers -- exists before the capture); the next call captures
the step and replays it at once (a capture only records); later calls only replay.

What a captured step must respect (CUDA graphs replay the recorded kernels with the recorded
arguments and pointers; nothing on the host runs again):

- **Static shapes and dtypes.** Inputs are copied into fixed buffers; a batch of another shape
  (e.g. a smaller last batch) raises ``ValueError``: drop it, pad it, or use another graph.
- **No host synchronisation inside the step**: no ``.item()``, ``.tolist()``, ``print(loss)``,
  ``.cpu()``, data-dependent Python control flow or shape, and no new CPU->GPU copies from pageable
  memory. Read outputs after the call returns. (``F.cross_entropy`` skips its host-side target
  check while capturing.)
- **Parameters and optimizer state are updated in place** (tinydl's optimizers do), so replays
  keep training the same tensors.
- **Host scalars are captured as constants.** A learning rate is passed to the update kernel as a
  Python float, so it is frozen at capture: after a scheduler changes ``group["lr"]``, call
  :meth:`CudaGraphStep.recapture` (the next call captures again; cheap, once per epoch). Adam's
  step count must live on the device: use ``Adam(..., capturable=True)``, or every replay repeats
  the bias correction of the captured step.
- **Randomness**: random numbers drawn on the GPU with torch's CUDA generator inside the step
  advance on every replay (torch registers the generator with the graph); a seed drawn on the host
  (a Python or CPU random number passed to a kernel, as tinydl's ``F.dropout`` does) is frozen at
  capture, so every replay reuses the same mask: capture inference graphs in eval mode.
- The capture runs the step's Python code once without running its GPU work (the replay that
  follows does): host-side side effects (a counter incremented in Python) happen one time more
  than the capture's own step.
- Outputs are the tensors the capture produced; every replay overwrites them in place.

Inference works the same way: ``CudaGraphStep(lambda x: model(x))`` under ``td.no_grad()``
(the grad mode is whatever it is when the calls run: keep it the same).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from tinydl import _runtime
from tinydl.autograd import Tensor, _as_torch

__all__ = ["CudaGraphStep", "cuda_graphs_available"]


def cuda_graphs_available() -> bool:
    """True when tinydl runs natively on a CUDA GPU (not through the interpreter)."""
    return _runtime.DEVICE == "cuda" and not _runtime.INTERPRET and torch.cuda.is_available()


class CudaGraphStep:
    """Run ``step_fn(*inputs)`` eagerly ``warmup`` times, then capture it as one CUDA graph and replay.

    Args:
        step_fn: the step; called with one argument per input, each of the same kind as the input
            (a ``td.Tensor`` gives a ``td.Tensor`` wrapping the static buffer, a ``torch.Tensor`` the
            buffer itself). Returns anything (tensors, tuples, dicts, None); the returned object of
            the capture is handed back by every replay.
        warmup: eager calls before the capture (default 3; they are real steps on their inputs).
            ``warmup=0`` only if the step has already run eagerly with these shapes: state created
            lazily inside a capture (an optimizer's flat buffers, momentum, Adam's device step
            count) would be re-initialised by every replay.
        pool: a memory-pool handle (``torch.cuda.graph_pool_handle()`` or another graph's ``.pool``)
            to share memory between graphs that never run concurrently; default: a private pool
            per capture.

    Call ``step(*inputs)``: the inputs are copied into static buffers (allocated on the first call,
    which fixes every input's shape, dtype and device), then the step runs eagerly, is captured and
    replayed, or is replayed. ``static_inputs`` / ``static_outputs`` expose the buffers, so a caller
    can also fill ``static_inputs`` itself and call :meth:`replay`.

    Raises ``RuntimeError`` when tinydl is not running natively on a CUDA GPU (CPU, interpreter).
    """

    def __init__(self, step_fn: Callable[..., Any], warmup: int = 3, pool: Any = None):
        if not cuda_graphs_available():
            raise RuntimeError(
                "CudaGraphStep needs a CUDA GPU with tinydl's kernels compiled natively, but tinydl runs on "
                f"{_runtime.DEVICE!r} in {_runtime.mode()} mode (torch.cuda.is_available()="
                f"{torch.cuda.is_available()}). Run the step without a CUDA graph on this machine."
            )
        if not callable(step_fn):
            raise TypeError(f"CudaGraphStep: step_fn must be callable, got {type(step_fn).__name__}")
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ValueError(f"CudaGraphStep: warmup must be an int >= 0, got {warmup!r}")
        self.step_fn = step_fn
        self.warmup_left = warmup
        self._pool_arg = pool
        self._buffers: list[torch.Tensor] | None = None
        #: what step_fn receives: td.Tensor views (requires_grad=False) or the raw buffers
        self.static_inputs: tuple = ()
        self.static_outputs: Any = None
        self.graph: torch.cuda.CUDAGraph | None = None

    @property
    def pool(self) -> Any:
        """The memory pool of the current graph (None before the capture)."""
        return self.graph.pool() if self.graph is not None else self._pool_arg

    def _set_inputs(self, inputs: tuple) -> None:
        if self._buffers is None:  # the first call fixes shapes, dtypes, devices and kinds
            datas = [_as_torch(x, f"CudaGraphStep: input {i}") for i, x in enumerate(inputs)]
            for i, d in enumerate(datas):
                if d.device.type != "cuda":
                    raise ValueError(f"CudaGraphStep: input {i} is on {d.device}; every input must be on the GPU")
            self._buffers = [d.detach().clone() for d in datas]
            self.static_inputs = tuple(Tensor(b) if isinstance(x, Tensor) else b
                                       for b, x in zip(self._buffers, inputs))
            return
        if len(inputs) != len(self._buffers):
            raise ValueError(f"CudaGraphStep: expected {len(self._buffers)} inputs, got {len(inputs)}")
        for i, (x, buf) in enumerate(zip(inputs, self._buffers)):
            d = _as_torch(x, f"CudaGraphStep: input {i}")
            if d.shape != buf.shape or d.dtype != buf.dtype:
                raise ValueError(
                    f"CudaGraphStep: input {i} has shape {tuple(d.shape)} and dtype {d.dtype}, but the step was "
                    f"set up for shape {tuple(buf.shape)} and dtype {buf.dtype} (shapes are static: drop or pad "
                    "the batch, or use another CudaGraphStep)"
                )
            if d.data_ptr() != buf.data_ptr():
                buf.copy_(d, non_blocking=True)

    def _eager(self) -> Any:
        # warm-up on a side stream: capture happens on a side stream too, and the caching
        # allocator keeps per-stream pools, so this primes the one the capture will use
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.step_fn(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self) -> None:
        torch.cuda.synchronize()
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
        try:
            # a fresh private pool unless one was given: the previous graph (recapture) keeps its
            # own until this capture has succeeded and it is released
            with torch.cuda.graph(graph, pool=self._pool_arg):
                outputs = self.step_fn(*self.static_inputs)
        except Exception as e:
            torch.cuda.set_stream(stream)  # a failed capture_end leaves the capture stream current
            cause = e.__context__ or e.__cause__
            raise RuntimeError(
                f"CudaGraphStep: capturing the step failed ({type(e).__name__}: {e}"
                + (f"; while handling {type(cause).__name__}: {cause}" if cause is not None else "")
                + "). A captured step must not synchronise with the host: no .item()/.tolist()/.cpu(), no printing "
                "tensors, no data-dependent host checks, no torch.tensor(..., device='cuda') from Python values; "
                "see the tinydl.cuda_graph docstring for what a step under a CUDA graph must respect"
            ) from e
        self.graph, self.static_outputs = graph, outputs

    def recapture(self) -> None:
        """Capture again on the next call (after changing a host scalar the step passes to a kernel,
        such as ``lr``). The current graph stays usable until then."""
        self._stale = True

    _stale = False

    def replay(self) -> Any:
        """Replay on whatever the static inputs hold now; returns the static outputs."""
        if self.graph is None:
            raise RuntimeError("CudaGraphStep.replay: nothing captured yet (call the step first)")
        self.graph.replay()
        return self.static_outputs

    def __call__(self, *inputs: Any) -> Any:
        self._set_inputs(inputs)
        if self.warmup_left > 0:
            self.warmup_left -= 1
            return self._eager()
        if self.graph is None or self._stale:
            self._capture()
            self._stale = False
        return self.replay()
