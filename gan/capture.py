"""Step capture: each training phase's whole step recorded once as a CUDA graph over static input buffers, then replayed.

A small GAN's step is hundreds of small kernels, each launched from Python: on a GPU the launches, not the arithmetic,
set its pace. A CUDA graph launches them all at once. Inside a phase's graph: its gradients zeroed in place, its forward
and backward (`GANLoss.accumulate_gradients`), the gradient treatments and the optimiser step (`training_loop.step_phase`).
Outside, eager, at every step: the batch and the phase's draws copied into the static buffers, the scheduled learning
rate filled into the optimiser's tensor (`optim.set_lr`, `optim.capture_ready`), the phase's after-step hook (the EMA
update, WGAN's clipping) and the stats copied out.

Each phase (D, Dreg, G) has a graph of its own, so n_critic and lazy R1 only choose which to replay. A phase runs eagerly
for its first WARMUP steps (on a side stream, as torch asks: the optimiser's state, cuDNN's plans and the allocator are
set up there), is captured at its next step and replayed from then on; a batch of another size runs eagerly. What cannot
be captured is refused before training (`config.capture_problem`); after a watchdog rollback the optimisers hold new
state tensors, and `reset` captures again. On a CPU the recorded step is the function itself, called on the same static
buffers: the same code path without a graph, which the tests compare with the eager step.
"""

import warnings
from collections.abc import Callable

import torch

Tensor = torch.Tensor
Body = Callable[[dict[str, Tensor]], dict[str, Tensor]]  # a phase's step: named inputs -> named stats
WARMUP = 3  # eager steps of a phase before its capture (torch's own examples warm up 3 iterations)


def record(body: Body, inputs: dict[str, Tensor], stream: "torch.cuda.Stream | None") -> Callable[[], dict[str, Tensor]]:
    """`body(inputs)`, recorded: each call of the result runs its kernels again, on whatever `inputs` then hold, and
    returns the same output tensors, refilled. On CUDA (`stream`: the capture's side stream) a CUDA graph, whose capture
    runs nothing; without CUDA (`stream` None) the call itself."""
    if stream is None:
        return lambda: body(inputs)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        outputs = body(inputs)

    def replay() -> dict[str, Tensor]:
        graph.replay()
        return outputs

    return replay


def fits(static: dict[str, Tensor], inputs: dict[str, Tensor]) -> bool:
    """Whether `inputs` can be copied into the static buffers: the same names, shapes and dtypes."""
    return static.keys() == inputs.keys() and all(static[k].shape == v.shape and static[k].dtype == v.dtype for k, v in inputs.items())


class StepGraphs:
    """A run's captured phases, by name: eager for a phase's first `warmup` steps, then replayed from its graph."""

    def __init__(self, device: torch.device, warmup: int = WARMUP) -> None:
        self.device, self.warmup = device, warmup
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.reset()

    def reset(self) -> None:
        """Forget every graph and warm up again (after a rollback: the optimisers' state tensors are other ones now)."""
        self.calls: dict[str, int] = {}
        self.graphs: dict[str, tuple[dict[str, Tensor], Callable[[], dict[str, Tensor]]]] = {}

    def run(self, name: str, body: Body, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """`body(inputs)` for phase `name`: replayed from its graph with `inputs` copied in, once it has one; captured
        at its (warmup + 1)-th call; eager before that, and for inputs its graph does not fit. The stats come back as
        copies of their own (the graph's outputs are refilled by its next replay)."""
        self.calls[name] = self.calls.get(name, 0) + 1
        if name not in self.graphs and self.calls[name] > self.warmup:
            static = {k: v.clone() for k, v in inputs.items()}  # clone keeps the memory format (channels_last)
            self.graphs[name] = (static, record(body, static, self.stream))
        elif name not in self.graphs or not fits(self.graphs[name][0], inputs):
            return self._eager(body, inputs)
        static, replay = self.graphs[name]
        for key, tensor in inputs.items():
            static[key].copy_(tensor)
        return {k: v.clone() for k, v in replay().items()}

    def _eager(self, body: Body, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """`body(inputs)` run as it is; on CUDA on the capture's side stream, ordered after and before the main stream's work."""
        if self.stream is None:
            return body(inputs)
        main = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream), warnings.catch_warnings():
            # A capturable optimiser stepped outside a capture warns that it is slower so: these steps are meant to be.
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            stats = body(inputs)
        main.wait_stream(self.stream)
        for tensor in stats.values():
            tensor.record_stream(main)  # made on the side stream, read on the main one
        return stats
