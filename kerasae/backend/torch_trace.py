"""A model's training losses on PyTorch, traced once into a graph of PyTorch operators and replayed.

Keras on PyTorch runs a model op by op in Python: each `keras.ops` call converts and checks its
arguments, each layer's `__call__` sets up scopes, which cost the seed's VAE ~3 of its ~5 ms forward
pass (the operators themselves ~2 ms). `make_fx` records what `compute_losses(x, y, training=True)`
asks of PyTorch, once per shape of batch, as a graph of `aten` operators on the model's own
variables (by reference, so the optimizer's updates are seen); the graph is then run in their
place and `backward()` differentiates it as before. TensorFlow's `tf.function` and `jax.jit` run
the same step compiled, with the same rule: the losses are a function of the batch, the variables
and the random draws; plain Python attributes are read when traced.

Random draws stay outside the graph: every `keras.random` draw of the traced pass is a graph input,
drawn before each replay by Keras itself with the same arguments and seed generators, in the same
order, so a traced run draws exactly the numbers of an eager one (tests/test_torch_trace.py trains
both and compares the weights).

A model is trained eagerly, as before, where its pass cannot be traced faithfully: Python that
reads a tensor's value (make_fx refuses it), a variable assigned in the pass (an EMA codebook, a
batch norm's statistics), a draw whose arguments are tensors, more than `MAX_SHAPES` shapes of
batch, or any failure to trace.
"""

import contextlib

import torch

from kerasae.backend import private

MAX_SHAPES = 4  # batch shapes traced per model (a full batch and an epoch's last, short one)
ENABLED = True  # tests switch the tracing off to compare with Keras's eager pass
# Keras's PyTorch random draws (`keras/src/backend/torch/random.py`), each kept out of the graph.
DRAWS = (
    "normal",
    "uniform",
    "truncated_normal",
    "binomial",
    "beta",
    "gamma",
    "categorical",
    "randint",
    "dropout",
    "shuffle",
)


def _random_module():
    import keras.src.backend.torch.random as module

    return module


@contextlib.contextmanager
def _draws_replaced(replace):
    """Keras's PyTorch random draws replaced by `replace(name, original)` within the block."""
    module = _random_module()
    originals = {name: getattr(module, name) for name in DRAWS if hasattr(module, name)}
    for name, original in originals.items():
        setattr(module, name, replace(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(module, name, original)


class _Untraceable(Exception):
    """The pass cannot be replayed faithfully: the model trains eagerly."""


def _recorded(model, x, y, draws):
    """`compute_losses` run eagerly, appending each draw's (name, args, kwargs) to `draws`."""

    def replace(name, original):
        def draw(*args, **kwargs):
            if any(isinstance(a, torch.Tensor) for a in (*args, *kwargs.values())):
                raise _Untraceable(f"a {name} draw with tensor arguments")
            value = original(*args, **kwargs)
            draws.append((name, args, kwargs, value.shape, value.dtype, value.device))
            return value

        return draw

    with _draws_replaced(replace):
        return model.compute_losses(x, y, training=True)


def _traced(model, x, y, draws):
    """The graph of `compute_losses(x, y, training=True)` with the draws as inputs."""
    examples = [torch.zeros(shape, dtype=dtype, device=device) for *_, shape, dtype, device in draws]

    def losses(x, y, noise):
        supply = iter(noise)

        def replace(name, original):
            return lambda *args, **kwargs: next(supply)

        with _draws_replaced(replace):
            return model.compute_losses(x, y, training=True)

    from torch.fx.experimental.proxy_tensor import make_fx

    # Traced on fake tensors: Python that reads a value (`float`, `.numpy()`) fails here instead
    # of freezing the branch it took. An assignment may still reach a variable: all are restored.
    values = [v.value for v in model.variables]
    kept = [value.detach().clone() for value in values]
    try:
        graph = make_fx(losses, tracing_mode="fake", _allow_non_fake_inputs=True)(x, y, examples)
    finally:  # (through `.data`: the eager pass's pending backward saw these very values)
        for value, old in zip(values, kept):
            if not torch.equal(value, old):
                value.data.copy_(old)
    mutated = [n for n in graph.graph.nodes if n.op == "call_function" and _mutates(n.target)]
    if mutated:
        raise _Untraceable(f"the pass assigns a variable ({mutated[0].target})")
    return graph


def _mutates(target):
    schema = getattr(target, "_schema", None)
    return schema is not None and any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)


class TracedLosses:
    """`compute_losses(x, y, training=True)` of one model, traced per batch shape and replayed."""

    def __init__(self, model):
        self.model = model
        self.graphs = {}  # batch shape -> (graph, draws)
        self.eager = not (
            ENABLED and private.available("torch.fx.experimental.proxy_tensor.make_fx, keras.src.backend.torch.random")
        )
        self.reason = None  # why the model trains eagerly, once found

    def __call__(self, x, y):
        if self.eager:
            return self.model.compute_losses(x, y, training=True)
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in (x, y) if t is not None)
        if key in self.graphs:
            graph, draws = self.graphs[key]
            module = _random_module()
            noise = [getattr(module, name)(*args, **kwargs) for name, args, kwargs, *_ in draws]
            return graph(x, y, noise)
        return self._trace(key, x, y)

    def _trace(self, key, x, y):
        """This batch's losses, computed eagerly (its draws recorded), and its shape's graph."""
        draws = []
        try:
            losses = _recorded(self.model, x, y, draws)
        except _Untraceable as why:
            self._give_up(why)
            return self.model.compute_losses(x, y, training=True)
        try:
            if len(self.graphs) >= MAX_SHAPES:
                raise _Untraceable(f"more than {MAX_SHAPES} shapes of batch")
            self.graphs[key] = (_traced(self.model, x, y, draws), draws)
        except Exception as why:  # noqa: BLE001 -- any failure to trace: Keras's eager pass, as before
            self._give_up(why)
        return losses

    def _give_up(self, why):
        self.eager, self.reason, self.graphs = True, f"{type(why).__name__}: {why}", {}
