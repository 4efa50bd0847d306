"""Capture the target layer and split the network there.

A model is cut at the target layer into a *body* ``x -> A`` and a *head* ``F: A -> logits``.
The body runs once per input, without autograd; every method then works on the head alone.

The cut is made on the ``torch.fx`` graph of the model: the head is the sub-graph of everything
downstream of the layer, the body everything upstream. Values the head needs that do not depend on
``A`` (a skip connection around the layer, ``x.size(0)`` used in a ``view``) are computed by the body
and passed to the head as fixed *context*. A model that ``torch.fx`` cannot trace (data-dependent
control flow) falls back to re-running the model with the layer's output substituted by a forward hook;
correct, but the body is recomputed at every head evaluation.

A layer whose output is not channels-first maps (transformer tokens, channels-last stages) is seen as
maps through a :class:`~liftcam.layout.MapView`: the body returns the maps, and the head turns them back
into the layer's own layout (its other elements, such as prefix tokens, kept as context).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.fx
from torch import Tensor, nn

from .errors import HeadError, LayerError
from .layout import MapView, Reshape, map_view

SplitMode = Literal["auto", "graph", "rerun"]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted name, module)`` of ``layer`` in ``model``.

    ``layer`` is a name as in ``model.named_modules()`` or the module object itself. A wrong name
    raises :class:`LayerError` listing the closest names.
    """
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer:
                if name == "":
                    raise LayerError("the target layer must be a submodule, not the whole model")
                return name, module
        raise LayerError(f"the given {type(layer).__name__} module is not a submodule of the model")
    if not isinstance(layer, str):
        raise LayerError(f"layer must be a module name or an nn.Module, not {type(layer).__name__}")
    if layer in modules and layer != "":
        return layer, modules[layer]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    if not close:
        close = [n for n in names if n.startswith(layer.split(".")[0])][:5]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise LayerError(f"no layer named {layer!r} in {type(model).__name__}{hint}")


def model_output_logits(output: Any) -> Tensor:
    """The logits tensor of a model's output: a tensor, the first of a tuple or list, ``["logits"]`` or
    ``["out"]`` of a dict, or ``.logits`` (Hugging Face's ``ImageClassifierOutput``)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, dict):
        for key in ("logits", "out"):
            value = output.get(key)
            if isinstance(value, Tensor):
                return value
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, dict):
        found = f"a {type(output).__name__} with keys {', '.join(map(str, output))}"
    elif isinstance(output, (tuple, list)):
        found = f"a {type(output).__name__} of {len(output)} ({', '.join(type(o).__name__ for o in output[:4])})"
    else:
        found = f"a {type(output).__name__}"
    raise HeadError(
        f"cannot find the logits in the model's output ({found}); pass output= a function from the model's "
        "output to its (B, C) logits"
    )


def logits_in_chunks(
    model: nn.Module,
    inputs: Tensor,
    batch_size: int,
    read: Callable[[Tensor, int, int], Tensor],
    channels_last: bool = True,
) -> Tensor:
    """``read(logits, start, stop)`` of the model's logits for ``inputs[start:stop]``, chunk by chunk of
    ``batch_size`` inputs, without autograd, concatenated. 4-D chunks go in channels-last memory format
    (``channels_last``): 1.2-1.7x faster convolutions on CPU."""
    memory_format = torch.channels_last if channels_last and inputs.dim() == 4 else torch.contiguous_format

    def chunk(start: int, stop: int) -> Tensor:
        return read(model_output_logits(model(inputs[start:stop].contiguous(memory_format=memory_format))), start, stop)

    with torch.inference_mode():
        return in_chunks(inputs.shape[0], batch_size, chunk, inputs.new_zeros(0))


#: Inputs per forward pass on CPU, where the caller does not say (larger batches are slower per input there).
CPU_CHUNK = 16
#: Memory a chunk of inputs may take on CUDA, counting 16x an input's bytes for its activations.
CUDA_CHUNK_BYTES = 4 * 2**30


def chunk_size(example: Tensor, cpu: int) -> int:
    """Inputs per forward pass, where the caller does not say: ``cpu`` off CUDA (the caller's rule: on CPU larger
    batches are slower per input, cache-bound); on CUDA :func:`cuda_chunk`'s, as a GPU given 16 small inputs at
    a time waits on kernel launches. ``example``: the inputs, or a chunk of them."""
    if example.device.type != "cuda":
        return cpu
    return cuda_chunk(example[0].numel() * example.element_size())


def chunk_within(input_bytes: int, most: int, budget: int) -> int:
    """Up to ``most`` inputs of ``input_bytes`` each, within ``budget`` at 16x an input's bytes (activations)."""
    return max(1, min(most, budget // (16 * input_bytes)))


def cuda_chunk(input_bytes: int) -> int:
    """Up to 128 inputs of ``input_bytes`` each, within :data:`CUDA_CHUNK_BYTES`."""
    return chunk_within(input_bytes, 128, CUDA_CHUNK_BYTES)


def in_chunks(total: int, size: int, compute: Callable[[int, int], Tensor], empty: Tensor) -> Tensor:
    """``compute(start, stop)`` for consecutive chunks of ``size`` out of ``total`` items, concatenated
    (``empty`` when ``total`` is 0): the chunks' inputs are made one at a time, never all at once."""
    out = [compute(start, min(start + size, total)) for start in range(0, total, size)]
    return torch.cat(out) if out else empty


class OutputAdapter(nn.Module):
    """``output(model(x))``: a model whose output needs reading (a detector's, a segmenter's) as logits."""

    def __init__(self, model: nn.Module, output: Callable[[Any], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.model(x))


@dataclass
class Captured:
    """What the body computed for one input batch.

    ``activations`` is the target layer's output ``A`` (B, K, h, w); ``context`` holds the other
    values the head needs (not functions of ``A``); ``input_size`` is the input's spatial size and
    ``inputs`` the input batch itself (for methods that perturb the input).
    """

    activations: Tensor
    context: tuple[Any, ...]
    input_size: tuple[int, ...]
    inputs: Tensor | None = None


#: Which element of a layer's tuple, list or dict output is explained: a position, or a dict's key.
Element = int | str


class _Views:
    """The map view of a layer's output, found once per output shape; for a layer that outputs a tuple, list
    or dict of tensors (HRNet's branches, TNT's pixel and patch tokens, an FPN's levels), the element explained:
    ``element`` (a position, or a dict's key), by default the first one with the batch's size that can be
    seen as maps."""

    def __init__(self, model: nn.Module, layer: str, reshape: Reshape | None, element: Element | None = None) -> None:
        self.model, self.layer, self.reshape, self.element = model, layer, reshape, element
        self.by_shape: dict[tuple[int, ...], MapView | None] = {}
        self.current: MapView | None = None

    def find(self, output: Tensor, x: Tensor) -> MapView | None:
        key = tuple(output.shape[1:])
        if key not in self.by_shape:
            with torch.inference_mode(False):  # the index map is used by the head, under autograd
                self.by_shape[key] = map_view(output, tuple(x.shape[2:]), self.model, self.layer, self.reshape)
        return self.by_shape[key]

    def _pick(self, output: tuple[Any, ...] | list[Any], x: Tensor, keys: list[Any] | None = None) -> int:
        element = self.element
        if isinstance(element, str):
            if keys is None or element not in map(str, keys):
                found = f"keys {', '.join(map(str, keys))}" if keys is not None else f"{len(output)} values, no keys"
                raise LayerError(f"layer {self.layer!r} outputs {found}; no element {element!r}")
            element = [str(k) for k in keys].index(element)
        if element is not None:
            if not -len(output) <= element < len(output) or not isinstance(output[element], Tensor):
                raise LayerError(
                    f"layer {self.layer!r} outputs {len(output)} values; element {element} is not a tensor"
                )
            return element % len(output)
        for i, value in enumerate(output):
            if isinstance(value, Tensor) and value.dim() >= 3 and value.shape[0] == x.shape[0]:
                try:
                    view = self.find(value, x)
                except LayerError:
                    continue
                if view is not None or value.dim() == x.dim():
                    return i
        raise LayerError(f"layer {self.layer!r} outputs {len(output)} values, none of them maps; pick another layer")

    def maps(self, output: Any, x: Tensor, keys: list[Any] | None = None) -> tuple[Tensor, tuple[Any, ...]]:
        """The maps, and what the head needs besides them to rebuild the output (the output itself, or the
        element's index and every element; for a dict, its keys too)."""
        if isinstance(output, Mapping) and output:
            keys = list(output)
            activations, (index, *values) = self.maps(list(output.values()), x, keys)
            return activations, (index, *values, _Keys(type(output), keys))
        if isinstance(output, (tuple, list)) and output:
            index = self._pick(output, x, keys)
            activations, _ = self.maps(output[index], x)
            return activations, (index, *output)
        if not isinstance(output, Tensor):
            raise LayerError(f"layer {self.layer!r} outputs a {type(output).__name__}, not a tensor")
        self.current = view = self.find(output, x)
        maps = _check_activations(output if view is None else view.to_maps(output), self.layer)
        if maps.dim() != x.dim():
            raise LayerError(
                f"layer {self.layer!r} outputs shape {tuple(output.shape)}, not spatial maps like the input's "
                f"{tuple(x.shape)}; pick a convolutional layer"
            )
        return maps, (() if view is None else (output,))

    def output(self, activations: Tensor, extra: tuple[Any, ...]) -> Any:
        if not extra:
            return activations
        if isinstance(extra[0], int):  # a tuple or dict: the element explained, rebuilt, among the others
            keys = extra[-1] if isinstance(extra[-1], _Keys) else None
            index, elements = extra[0], list(extra[1 : len(extra) - (keys is not None)])
            original = elements[index]
            view = self.by_shape.get(tuple(original.shape[1:]))
            elements[index] = activations if view is None else view.from_maps(activations, original)
            return tuple(elements) if keys is None else keys.rebuild(elements)
        (original,) = extra
        view = self.by_shape[tuple(original.shape[1:])]
        assert view is not None
        return view.from_maps(activations, original)


@dataclass(frozen=True)
class _Keys:
    """A dict output's type and keys, to rebuild it around the explained element."""

    kind: type
    keys: list[Any]

    def rebuild(self, values: list[Any]) -> Any:
        return self.kind(zip(self.keys, values, strict=True))


class SplitModel(Protocol):
    """A model cut at ``layer``: ``body`` runs up to the layer, ``head`` from the layer on."""

    layer: str
    module: nn.Module
    mode: Literal["graph", "rerun"]

    @property
    def view(self) -> MapView | None: ...

    def body(self, x: Tensor) -> Captured: ...

    def head(self, activations: Tensor, context: tuple[Any, ...]) -> Tensor: ...


class _LeafTracer(torch.fx.Tracer):
    """The default tracer, but the target module stays one node in the graph."""

    def __init__(self, leaf: nn.Module) -> None:
        super().__init__()
        self._leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # modules marked ``traced_whole = True`` (a detector's RoI scoring, whose Python reads shapes) are
        # called as they are, their operations still seen by the head's engines
        if getattr(m, "traced_whole", False):
            return True
        return m is self._leaf or super().is_leaf_module(m, module_qualified_name)


def _reachable(
    start: Iterable[torch.fx.Node], step: Callable[[torch.fx.Node], Iterable[torch.fx.Node]]
) -> set[torch.fx.Node]:
    """Every node reached from ``start`` (included) by following ``step`` repeatedly."""
    seen: set[torch.fx.Node] = set()
    stack = list(start)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(step(n))
    return seen


def parse_call(layer: str | nn.Module) -> tuple[str | nn.Module, int | None]:
    """``"name#k"`` -> ``("name", k)`` (the k-th call of a module called several times, from 1); else no call."""
    if isinstance(layer, str) and "#" in layer:
        name, _, number = layer.rpartition("#")
        if not number.isdigit() or int(number) < 1:
            raise LayerError(f"layer {layer!r}: the call after '#' must be a number from 1")
        return name, int(number)
    return layer, None


def _pick_call(layer: str, calls: int, call: int | None) -> int:
    """The index (from 0) of the call explained: the given one, or the first (pytorch-grad-cam 1.5 pairs the
    first call's activations with the first call's gradients)."""
    if calls == 0:
        raise LayerError(f"layer {layer!r} is never called in the model's forward")
    if call is not None and call > calls:
        raise LayerError(f"layer {layer!r} is called {calls} times in the forward pass; pick a call from 1 to {calls}")
    return 0 if call is None else call - 1


def parse_element(layer: str | nn.Module) -> tuple[str | nn.Module, Element | None]:
    """``"name[e]"`` -> ``("name", e)``: element ``e`` of a layer's tuple, list or dict output (a position, or a
    dict's key: ``"backbone.fpn[pool]"``); else no element."""
    if isinstance(layer, str) and layer.endswith("]") and "[" in layer:
        name, _, element = layer[:-1].rpartition("[")
        if not name or not element:
            raise LayerError(f"layer {layer!r}: give an element's position or key inside '[...]'")
        return name, int(element) if element.lstrip("-").isdigit() else element
    return layer, None


def parse_layer(
    layer: str | nn.Module, call: int | None = None, element: Element | None = None
) -> tuple[str | nn.Module, int | None, Element | None]:
    """``"name#k[e]"`` -> ``("name", k, e)``, merged with a ``call`` and ``element`` given apart; the two ways
    of saying one must agree."""
    layer, named_element = parse_element(layer)
    layer, named_call = parse_call(layer)
    for what, named, given in (("element", named_element, element), ("call", named_call, call)):
        if named is not None and given is not None and named != given:
            raise LayerError(f"{what} {given!r} and the layer's name {layer}: {named!r} disagree")
    return layer, named_call if call is None else call, named_element if element is None else element


def call_name(layer: str, call: int | None) -> str:
    """The layer's name as asked: ``"name#k"`` for a call given, else ``"name"``."""
    return layer if call is None else f"{layer}#{call}"


class GraphSplit:
    """Split on the ``torch.fx`` graph: ``body`` and ``head`` are two generated modules."""

    mode: Literal["graph", "rerun"] = "graph"

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        module: nn.Module,
        reshape: Reshape | None = None,
        call: int | None = None,
        element: Element | None = None,
    ) -> None:
        self.layer = layer
        self.module = module
        self._views = _Views(model, layer, reshape, element)
        self._extra = 0
        tracer = _LeafTracer(module)
        graph = tracer.trace(model)
        qualname = tracer.path_of_module(module)
        calls = [n for n in graph.nodes if n.op == "call_module" and n.target == qualname]
        target = calls[_pick_call(layer, len(calls), call)]
        self.layer = call_name(layer, call)
        downstream = _reachable(target.users, lambda n: n.users)
        output = next(n for n in graph.nodes if n.op == "output")
        if output not in downstream:
            raise LayerError(f"the model's output does not depend on layer {layer!r}")

        # Context: values the head reads that are computed upstream, not from the layer.
        context: list[torch.fx.Node] = []
        for n in graph.nodes:
            if n in downstream:
                for arg in n.all_input_nodes:
                    if arg is not target and arg not in downstream and arg.op != "get_attr" and arg not in context:
                        context.append(arg)

        head_graph = torch.fx.Graph()
        env: dict[torch.fx.Node, torch.fx.Node] = {target: head_graph.placeholder("activations")}
        for i, n in enumerate(context):
            env[n] = head_graph.placeholder(f"context_{i}")
        for n in graph.nodes:
            if n in downstream:
                env[n] = head_graph.node_copy(n, lambda a: _lookup(a, env, head_graph))
        head_graph.lint()

        body_graph = torch.fx.Graph()
        needed = _reachable([target, *context], lambda n: n.all_input_nodes)
        benv: dict[torch.fx.Node, torch.fx.Node] = {}
        for n in graph.nodes:
            if n in needed:
                benv[n] = body_graph.node_copy(n, lambda a: benv[a])
        body_graph.output((benv[target], *[benv[c] for c in context]))
        body_graph.lint()

        self._body = torch.fx.GraphModule(model, body_graph, class_name="Body")
        self._head = torch.fx.GraphModule(model, head_graph, class_name="Head")

    def body(self, x: Tensor) -> Captured:
        output, *context = self._body(x)
        activations, extra = self._views.maps(output, x)
        self._extra = len(extra)
        return Captured(activations, (*context, *extra), tuple(x.shape[2:]), x)

    def head(self, activations: Tensor, context: tuple[Any, ...]) -> Tensor:
        extra = context[len(context) - self._extra :] if self._extra else ()
        context = context[: len(context) - self._extra]
        # Context tensors are cloned: a head may update them in place (``out += identity``).
        fresh = tuple(c.clone() if isinstance(c, Tensor) else c for c in context)
        return model_output_logits(self._head(self._views.output(activations, extra), *fresh))

    @property
    def view(self) -> MapView | None:
        """How the layer's output is seen as maps (None: it is channels-first maps); known after ``body``."""
        return self._views.current


def _lookup(node: torch.fx.Node, env: dict[torch.fx.Node, torch.fx.Node], graph: torch.fx.Graph) -> torch.fx.Node:
    if node not in env:  # a parameter or buffer read with get_attr
        env[node] = graph.get_attr(str(node.target))
    return env[node]


class _StopForward(Exception):
    pass


class RerunSplit:
    """Fallback for models ``torch.fx`` cannot trace: the head re-runs the model with a hook.

    The part of the model up to the layer runs without autograd; the hook substitutes the given
    activations and switches autograd back on for the rest.
    """

    mode: Literal["graph", "rerun"] = "rerun"

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        module: nn.Module,
        reshape: Reshape | None = None,
        call: int | None = None,
        element: Element | None = None,
    ) -> None:
        self.layer = call_name(layer, call)
        self._name = layer
        self.module = module
        self._model = model
        self._views = _Views(model, layer, reshape, element)
        self._call = call
        self._index = 0

    def body(self, x: Tensor) -> Captured:
        captured: list[Tensor] = []
        wanted = self._call or 1

        def hook(_m: nn.Module, _i: Any, output: Any) -> None:
            captured.append(output)
            if len(captured) == wanted:
                raise _StopForward  # nothing after the chosen call is needed

        handle = self.module.register_forward_hook(hook)
        try:
            self._model(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        self._index = _pick_call(self._name, len(captured), self._call)
        activations, extra = self._views.maps(captured[self._index], x)
        return Captured(activations, (x, *extra), tuple(x.shape[2:]), x)

    @property
    def view(self) -> MapView | None:
        """How the layer's output is seen as maps (None: it is channels-first maps); known after ``body``."""
        return self._views.current

    def head(self, activations: Tensor, context: tuple[Any, ...]) -> Tensor:
        x, *extra = context
        grad_enabled = torch.is_grad_enabled()
        calls = 0

        def hook(_m: nn.Module, _i: Any, _o: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls - 1 != self._index:
                return None  # another call of the module: left as it is
            torch.set_grad_enabled(grad_enabled)
            return self._views.output(activations, tuple(extra))

        handle = self.module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                output = self._model(x)
        finally:
            handle.remove()
        if calls <= self._index:
            raise LayerError(f"layer {self.layer!r} was not called again when the model was re-run")
        return model_output_logits(output)


def _check_activations(activations: Any, layer: str) -> Tensor:
    if not isinstance(activations, Tensor):
        raise LayerError(f"layer {layer!r} outputs a {type(activations).__name__}, not a tensor")
    if activations.dim() not in (3, 4, 5):
        raise LayerError(
            f"layer {layer!r} outputs shape {tuple(activations.shape)}, not spatial maps (B, K, h, w) "
            "(or (B, K, L), (B, K, T, h, w)); pick a convolutional layer"
        )
    return activations


def split_model(
    model: nn.Module,
    layer: str | nn.Module,
    mode: SplitMode = "auto",
    reshape: Reshape | None = None,
    call: int | None = None,
    element: Element | None = None,
) -> SplitModel:
    """Cut ``model`` at ``layer``; ``mode="auto"`` uses the graph split, else the re-run fallback.

    ``reshape`` says how the layer's output maps to ``(B, K, h, w)`` (found automatically for tokens and
    channels-last outputs). A module called several times in the forward pass (a block's shared ReLU) is
    cut at its ``call``-th call (from 1; ``"name#k"`` says the same), by default the first, as pytorch-grad-cam.
    A layer that outputs a tuple, list or dict is explained at its ``element`` (default: the first that is maps;
    ``"name[e]"`` says the same)."""
    layer, call, element = parse_layer(layer, call, element)
    name, module = resolve_layer(model, layer)
    if mode == "rerun":
        return RerunSplit(model, name, module, reshape, call, element)
    try:
        return GraphSplit(model, name, module, reshape, call, element)
    except LayerError:
        raise
    except Exception as exc:  # torch.fx raises many kinds of errors on untraceable code
        if mode == "graph":
            raise HeadError(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc
        warnings.warn(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {exc}); "
            "the head is evaluated by re-running the model with the layer's output substituted",
            stacklevel=3,
        )
        return RerunSplit(model, name, module, reshape, call, element)
