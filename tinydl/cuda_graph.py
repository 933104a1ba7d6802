"""Whole-step CUDA graphs: capture one training (or inference) step once, then replay it.

At MNIST scale a training step is a few dozen small kernels, and the GPU spends most of the step
waiting for the host to launch them (Python, autograd bookkeeping, Triton's launcher). A CUDA
graph records the whole step's kernel launches once and replays them with a single host call.

    import tinydl as td
    from tinydl import nn, optim, functional as F
    from tinydl.cuda_graph import CudaGraphStep

    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = optim.SGD(model.parameters(), lr=0.1)

    def train_step(x, y):                  # x, y: td.Tensor views of the static input buffers
        opt.zero_grad(set_to_none=True)    # the grads are allocated inside the graph's memory pool
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()                         # must update the parameters in place
        return loss                        # static output: overwritten by every replay

    step = CudaGraphStep(train_step, (x0, y0))  # runs `warmup` real steps on x0, y0, then captures
    for x, y in loader:                         # every batch must have x0's and y0's shape and dtype
        loss = step(x, y)                       # copies x, y into the static inputs and replays
    print(loss.item())                          # .clone() an output to keep it past the next replay

What a captured step must respect (CUDA graphs replay the recorded kernels with the recorded
arguments and pointers; nothing on the host runs again):

- **Static shapes and dtypes.** Inputs are copied into fixed buffers; a batch of another shape
  (e.g. a smaller last batch) raises ``ValueError``: drop it, pad it, or capture a second graph.
- **No host synchronisation inside the step**: no ``.item()``, ``.tolist()``, ``print(loss)``,
  ``.cpu()``, data-dependent Python control flow or shape, and no new CPU->GPU copies from pageable
  memory. Read outputs after the call returns.
- **Parameters and optimizer state are updated in place** (tinydl's optimizers do), so replays
  keep training the same tensors. Optimizer state (momentum, Adam moments) must exist before
  capture; the warm-up steps create it.
- **Host scalars are captured as constants.** A learning rate passed to a kernel as a Python float
  is frozen at capture time: a scheduler that changes ``group["lr"]`` afterwards has no effect
  until you capture again (:meth:`CudaGraphStep.recapture`), unless the optimizer reads lr from a
  device tensor that you update in place. The same holds for a step counter kept on the host
  (Adam's bias correction): an optimizer used under a graph must keep it on the device, or the
  graph replays the correction of the captured step.
- **Randomness**: random numbers drawn on the GPU with torch's CUDA generator inside the step
  advance on every replay (torch registers the generator with the graph); a seed drawn on the host
  (a Python or CPU random number passed to a kernel, as tinydl's ``F.dropout`` does) is frozen at
  capture, so every replay reuses the same mask: capture inference graphs in eval mode.
- **Warm-up runs real steps.** ``warmup`` steps run on the example inputs before the capture
  (on a side stream, so that Triton compiles every kernel and lazily allocated state such as
  momentum buffers exists before capture). The capture itself records the GPU work without
  running it, but runs the step's Python code once: host-side side effects (a step counter
  incremented in Python) happen one time more than the GPU work. Pass ``warmup=0`` only if the
  step has already run with these shapes.
- Outputs are the tensors the capture produced; every replay overwrites them in place.

Inference works the same way: ``CudaGraphStep(lambda x: model(x), (x0,))`` under ``td.no_grad()``
(the grad mode is whatever it is when the constructor and the replays run: keep it the same).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from tinydl import _runtime
from tinydl.autograd import Tensor, _as_torch

__all__ = ["CudaGraphStep", "cuda_graphs_available"]


def cuda_graphs_available() -> bool:
    """True when tinydl runs natively on a CUDA GPU (not through the interpreter)."""
    return _runtime.DEVICE == "cuda" and not _runtime.INTERPRET and torch.cuda.is_available()


class CudaGraphStep:
    """Capture ``step_fn(*inputs)`` as one CUDA graph and replay it on new inputs.

    Args:
        step_fn: the step; called with one argument per example input, each of the same kind as
            the example (a ``td.Tensor`` example gives a ``td.Tensor`` wrapping the static buffer,
            a ``torch.Tensor`` example gives the buffer itself). Returns anything (tensors, tuples,
            dicts, None); the returned object is handed back by every call.
        example_inputs: tensors on the GPU fixing every input's shape, dtype and device. They are
            copied into static buffers owned by this object (the examples themselves are not kept).
        warmup: real steps to run on the example inputs before capturing (default 3).
        pool: a memory-pool handle (``torch.cuda.graph_pool_handle()`` or another graph's
            ``.pool``) to share memory between graphs that never run concurrently.

    Call ``step(*inputs)`` to copy the inputs into the static buffers and replay; it returns the
    static outputs (overwritten by the next replay). ``static_inputs`` / ``static_outputs`` expose
    the buffers, so a caller can also fill ``static_inputs`` itself and call :meth:`replay`.

    Raises ``RuntimeError`` when tinydl is not running natively on a CUDA GPU (CPU, interpreter).
    """

    def __init__(self, step_fn: Callable[..., Any], example_inputs: Sequence[Any], warmup: int = 3,
                 pool: Any = None):
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
        if isinstance(example_inputs, (torch.Tensor, Tensor)):
            example_inputs = (example_inputs,)
        examples = list(example_inputs)
        datas = [_as_torch(x, f"CudaGraphStep: input {i}") for i, x in enumerate(examples)]
        for i, d in enumerate(datas):
            if d.device.type != "cuda":
                raise ValueError(f"CudaGraphStep: input {i} is on {d.device}; every input must be on the GPU")
        self.step_fn = step_fn
        self._wrap = [isinstance(x, Tensor) for x in examples]
        self._buffers = [d.detach().clone() for d in datas]
        #: what step_fn receives: td.Tensor views (requires_grad=False) or the raw buffers
        self.static_inputs = tuple(Tensor(b) if w else b for b, w in zip(self._buffers, self._wrap))
        self.static_outputs: Any = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.pool = pool
        self._capture(warmup)

    def _capture(self, warmup: int) -> None:
        # Capture must not be on the default (legacy) stream, and the warm-up belongs on the same
        # side stream so the caching allocator's per-stream pools are primed for it.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self.step_fn(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph, pool=self.pool):
                self.static_outputs = self.step_fn(*self.static_inputs)
        except Exception as e:
            self.graph = None
            raise RuntimeError(
                f"CudaGraphStep: capturing the step failed ({type(e).__name__}: {e}). A captured step must not "
                "synchronise with the host: no .item()/.tolist()/.cpu(), no printing tensors, no data-dependent "
                "host checks (an op that validates its inputs on the host cannot be captured); see the "
                "tinydl.cuda_graph docstring for what a step under a CUDA graph must respect"
            ) from e
        if self.pool is None:
            self.pool = self.graph.pool()

    def recapture(self, warmup: int = 0) -> None:
        """Capture again (after changing a host scalar the step passes to a kernel, such as lr)."""
        self.graph = None
        self.static_outputs = None
        self._capture(warmup)

    def replay(self) -> Any:
        """Replay on whatever the static inputs hold now; returns the static outputs."""
        self.graph.replay()
        return self.static_outputs

    def __call__(self, *inputs: Any) -> Any:
        if len(inputs) != len(self._buffers):
            raise ValueError(f"CudaGraphStep: expected {len(self._buffers)} inputs, got {len(inputs)}")
        for i, (x, buf) in enumerate(zip(inputs, self._buffers)):
            d = _as_torch(x, f"CudaGraphStep: input {i}")
            if d.shape != buf.shape or d.dtype != buf.dtype:
                raise ValueError(
                    f"CudaGraphStep: input {i} has shape {tuple(d.shape)} and dtype {d.dtype}, but the graph was "
                    f"captured for shape {tuple(buf.shape)} and dtype {buf.dtype} (shapes are static: drop or pad "
                    "the batch, or capture another graph)"
                )
            if d.data_ptr() != buf.data_ptr():
                buf.copy_(d, non_blocking=True)
        return self.replay()
