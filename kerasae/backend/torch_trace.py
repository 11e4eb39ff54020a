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
drawn before each replay with the same arguments and seed generators, in the same order, so a traced
run draws exactly the numbers of an eager one (tests/test_torch_trace.py trains both and compares the
weights). Keras draws them, except the two every step makes: `uniform(0, 1)` and `normal` from a
`SeedGenerator` are drawn here with the `torch.Generator` Keras would seed, without the ~65 us of small
tensor ops Keras spends on the seed and, for `uniform`, the scale and shift by 1 and 0 over the whole
draw (a DAE batch's masking draw: 546 against 402 us; a VAE's code draw: 102 against 36 us). The same
bits, checked against Keras's own draws once per process: where a Keras version draws otherwise, Keras
draws them all.

A model is trained eagerly, as before, where its pass cannot be traced faithfully: Python that
reads a tensor's value (make_fx refuses it), a variable assigned in the pass (an EMA codebook, a
batch norm's statistics), a draw whose arguments are tensors, more than `MAX_SHAPES` shapes of
batch, or any failure to trace.
"""

import contextlib
import functools
import inspect

import keras
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
            return graph(x, y, [draw() for draw in draws])
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
            self.graphs[key] = (_traced(self.model, x, y, draws), [_replay(*draw[:3]) for draw in draws])
        except Exception as why:  # noqa: BLE001 -- any failure to trace: Keras's eager pass, as before
            self._give_up(why)
        return losses

    def _give_up(self, why):
        self.eager, self.reason, self.graphs = True, f"{type(why).__name__}: {why}", {}


def _replay(name, args, kwargs):
    """A recorded draw as a function that draws it again: Keras's own, or the same bits drawn directly."""
    module = _random_module()
    original = getattr(module, name)
    call = inspect.signature(original).bind(*args, **kwargs)
    call.apply_defaults()
    a = call.arguments
    direct = (
        name in ("uniform", "normal")
        and isinstance(a["seed"], keras.random.SeedGenerator)
        and len(a["shape"]) > 0
        and _direct_draws_match()
    )
    if direct and name == "uniform" and a["minval"] == 0 and a["maxval"] == 1:
        return functools.partial(_uniform01, a["shape"], _dtype(a["dtype"]), a["seed"])
    if direct and name == "normal":
        return functools.partial(_normal, a["shape"], a["mean"], a["stddev"], _dtype(a["dtype"]), a["seed"])
    return functools.partial(original, *args, **kwargs)


def _seeded(seed):
    """The `torch.Generator` Keras's PyTorch draws seed from a `SeedGenerator` (`torch_seed_generator`),
    its state `[seed, counter]` advanced as `SeedGenerator.next` advances it."""
    state = seed.state.value
    first, second = state.tolist()
    with torch.no_grad():
        state[1] += 1
    generator = torch.Generator(device=_random_module().get_device())
    generator.manual_seed((first + second) & 0xFFFFFFFF)
    return generator


def _dtype(dtype):
    module = _random_module()
    return module.to_torch_dtype(dtype or module.floatx())


def _uniform01(shape, dtype, seed):
    generator = _seeded(seed)
    return torch.rand(shape, generator=generator, dtype=dtype, device=generator.device)


def _normal(shape, mean, stddev, dtype, seed):
    generator = _seeded(seed)
    return torch.normal(mean, stddev, size=shape, generator=generator, dtype=dtype, device=generator.device)


@functools.cache
def _direct_draws_match():
    """Whether the direct draws give Keras's bits and leave its seed state as Keras does, in the
    installed versions (three draws of each, from two seed generators alike)."""
    module = _random_module()
    keras_seed, direct_seed = keras.random.SeedGenerator(20261207), keras.random.SeedGenerator(20261207)
    try:
        float32 = _dtype("float32")
        for _ in range(3):
            pairs = [
                (module.uniform((4, 5), seed=keras_seed), _uniform01((4, 5), float32, direct_seed)),
                (module.normal((3, 2), 0.5, 2.0, seed=keras_seed), _normal((3, 2), 0.5, 2.0, float32, direct_seed)),
            ]
            if not all(torch.equal(a, b) for a, b in pairs):
                return False
        return torch.equal(keras_seed.state.value, direct_seed.state.value)
    except Exception:  # noqa: BLE001 -- a name or a state laid out otherwise in this Keras: Keras draws
        return False
