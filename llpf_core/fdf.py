"""Follow Data Flow (FDF): Algorithm 1's phase schedule derived from the model itself.

Section 4 ("Hyperparameters") names the choice and order of layers as what decides whether
Algorithm 1 finds a low-loss path, and gives an ordering that works: (1) process layers in the
direction of data flow, from shallow to deep up to the output layer; (2) process parallel layers
individually before the layers after them. Appendix A.5, Table 2 applies it to DLA and CCT7 by
hand; every model without a hand-made schedule gets it from here: `layer_groups` finds the
groups, `derive_fdf_phases` turns them into cumulative phases (phase k = phase k-1 + group k).

Grouping rule (deterministic for a given model and input shape):

1. Units. The candidate groups start as the model's children. A child that is never called
   while its own children are (`nn.ModuleList`, `nn.ModuleDict`) is replaced by its children; a
   child without parameters is dropped; a parameter registered directly on the model is a unit of
   its own. "Splitting" a unit below replaces it by its units in the same way. A model that is
   a single layer (no parameterised children) is one group.
2. Trunks and wrappers. A unit holding more than half of the model's layers (modules that own
   parameters directly, counted in layers rather than parameters: ResNet18's `layer4` holds 75%
   of the parameters but 10 of 41 layers) is not one of the model's blocks but its trunk (VGG's
   `features`, EfficientNet's `layers`) or a wrapper (CCT's `classifier`): it is split, again
   and again while one remains.
3. Parallel branches. A block of blocks (at least two parameterised children, each with
   parameterised submodules of its own) whose children do not run as a plain chain in the forward
   pass is split once, and its children are marked `branch_of` it. "Plain chain" means each child
   reads exactly the previous child's output (the first one the block's input) and the block
   returns the last child's output; a parameter of the block's own, read along the way, breaks
   the chain too. DLA's `Tree` is split: `prev_root` and `level_1` both read the
   tree's input and `root` aggregates the outputs of all the others. An `nn.Sequential` of blocks,
   such as ResNet's `layer1`, is a plain chain and stays one group; a block of single layers,
   such as a ResNet BasicBlock or a transformer encoder layer, stays one group despite its
   residual connections. Nothing is split further after this step.
4. Order. Units are ordered by the first time data reaches them in one forward pass of a batch
   of 2 (eval mode, no gradients): a module when it is first called or one of its parameters is
   first used, a parameter unit (CCT's `classifier.positional_emb`) when an operation first reads
   it. Units never reached go last, in registration order, with a warning.
5. Normalization. A normalization layer (`llpf_core.phases.NORM_TYPES`) whose input is exactly
   the output of the unit before it joins that unit's group, so that a convolution and its
   BatchNorm move together: ResNet18's stem group is `conv1`+`bn1`.

Every parameter (by its `named_parameters` name) lands in exactly one group. For the registered
architectures this gives, for example, ResNet18: conv1+bn1, layer1, layer2, layer3, layer4, fc;
DLA: base, layer1, layer2, layer3.left_node, layer3.right_node, layer3.root, layer4.prev_root, ...
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from llpf_core.phases import NORM_TYPES
from llpf_core.settings import PhaseSpec, StepSizes

logger = logging.getLogger(__name__)

# Label of a container's own input in the data-flow record.
_INPUT = "<input>"


@dataclass(frozen=True)
class LayerGroup:
    """One layer group of the FDF schedule (section 4, principle 1 and 2).

    `modules` are the module or parameter names the group consists of; as phase patterns they
    select exactly `parameters` (`llpf_core.phases.matches`). `branch_of` names the container
    whose parallel branches the group belongs to (DLA: `layer4` for `layer4.prev_root`), or None.
    """

    name: str
    modules: tuple[str, ...]
    parameters: tuple[str, ...]
    branch_of: str | None = None


@dataclass(frozen=True)
class _Unit:
    name: str
    module: nn.Module | None  # None: a parameter registered directly on its owner
    branch_of: str | None = None


@dataclass
class _Flow:
    """What one forward pass recorded, by module and parameter name."""

    first_use: dict[str, int] = field(default_factory=dict)
    # module -> labels of what its inputs derive from, relative to its caller: names of the
    # caller's children whose outputs reach them, the caller's direct parameters, or _INPUT
    reads: dict[str, set[str]] = field(default_factory=dict)
    # module -> which of its own children (or its input) its output derives from
    output_reads: dict[str, set[str]] = field(default_factory=dict)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a nest of tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


class _FlowRecorder(TorchFunctionMode):
    """Follows every tensor of a forward pass back to the modules whose outputs it derives from.

    Each tensor carries, per calling module ("container"), the set of that container's children
    (or `_INPUT`, or its direct parameters) it derives from. Operations propagate the union of
    their inputs' labels; a module's output is relabelled as that module for its caller.
    """

    def __init__(self, model: nn.Module, hooked: set[int]) -> None:
        super().__init__()
        self.flow = _Flow()
        self.param_names = {id(p): name for name, p in model.named_parameters()}
        self.direct: dict[int, tuple[str, str]] = {}
        for module_name, module in model.named_modules():
            if id(module) not in hooked or not _has_parameterised_children(module):
                continue
            for local, parameter in module.named_parameters(recurse=False):
                name = f"{module_name}.{local}" if module_name else local
                if self.param_names.get(id(parameter)) == name:
                    self.direct[id(parameter)] = (module_name, name)
        self.labels: dict[int, dict[str, frozenset[str]]] = {}
        self.alive: list[torch.Tensor] = []  # keeps ids unique for the length of the pass
        self.stack: list[str] = []
        self.clock = 0

    def _label(self, tensor: torch.Tensor, container: str, labels: Iterable[str]) -> None:
        current = self.labels.get(id(tensor), {})
        self.labels[id(tensor)] = {**current, container: frozenset(labels)}
        self.alive.append(tensor)

    def _labels_for(self, tensors: Sequence[torch.Tensor], container: str) -> set[str]:
        found: set[str] = set()
        for tensor in tensors:
            found.update(self.labels.get(id(tensor), {}).get(container, ()))
        return found

    def pre_hook(self, name: str, args: Any, kwargs: Any) -> None:
        self.clock += 1
        self.flow.first_use.setdefault(name, self.clock)
        inputs = _tensors((args, kwargs))
        if self.stack:
            read = self._labels_for(inputs, self.stack[-1])
            self.flow.reads.setdefault(name, set()).update(read)
        for tensor in inputs:
            self._label(tensor, name, [_INPUT])
        self.stack.append(name)

    def post_hook(self, name: str, output: Any) -> None:
        self.stack.pop()
        outputs = _tensors(output)
        self.flow.output_reads.setdefault(name, set()).update(self._labels_for(outputs, name))
        if self.stack:
            for tensor in outputs:
                self._label(tensor, self.stack[-1], [name])

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        inputs = _tensors((args, kwargs))
        if not inputs:
            return result

        # union of the inputs' labels; a direct parameter labels its owner's view
        merged: dict[str, set[str]] = {}
        used_parameter = False
        for tensor in inputs:
            name = self.param_names.get(id(tensor))
            if name is not None:
                if not used_parameter:
                    self.clock += 1
                    used_parameter = True
                self.flow.first_use.setdefault(name, self.clock)
            owner = self.direct.get(id(tensor))
            if owner is not None:
                merged.setdefault(owner[0], set()).add(owner[1])
            for container, labels in self.labels.get(id(tensor), {}).items():
                merged.setdefault(container, set()).update(labels)

        # in-place operations without a result (`x[i] = y`) change their first argument
        outputs = _tensors(result)
        if result is None and isinstance(args[0] if args else None, torch.Tensor):
            outputs = [args[0]]
        frozen = {container: frozenset(labels) for container, labels in merged.items()}
        for tensor in outputs:
            self.labels[id(tensor)] = frozen
            self.alive.append(tensor)
        return result


def _has_parameterised_children(module: nn.Module) -> bool:
    return any(_has_parameters(child) for child in module.children())


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _layer_count(module: nn.Module) -> int:
    """Modules in `module`'s tree that own parameters directly (itself included)."""
    return sum(1 for m in module.modules() if next(m.parameters(recurse=False), None) is not None)


def _record_flow(model: nn.Module, input_shape: tuple[int, ...]) -> _Flow:
    """One forward pass of a seeded batch of 2 with hooks on every parameterised module."""
    reference = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn((2, *input_shape), generator=generator)
    batch = batch.to(device=reference.device, dtype=reference.dtype)

    # hook only modules with parameters: parameter-free ones (ReLU, Dropout) are transparent
    modules = [(name, m) for name, m in model.named_modules() if _has_parameters(m)]
    recorder = _FlowRecorder(model, {id(m) for _, m in modules})
    handles = []
    for name, module in modules:

        def pre_hook(_module: nn.Module, args: Any, kwargs: Any, name: str = name) -> None:
            recorder.pre_hook(name, args, kwargs)

        def post_hook(
            _module: nn.Module, _args: Any, _kwargs: Any, output: Any, name: str = name
        ) -> None:
            recorder.post_hook(name, output)

        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True))

    training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), recorder:
            model(batch)
    except Exception as error:
        error.add_note(
            f"llpf_core.fdf: while running {type(model).__name__} on a batch of shape "
            f"{tuple(batch.shape)} to follow its data flow; input_shape must be what the model "
            "takes per sample, e.g. (3, 32, 32) for CIFAR or (1, 28, 28) for MNIST"
        )
        raise
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in training.items():
            module.train(mode)
    return recorder.flow


def _units_of(module: nn.Module, prefix: str, flow: _Flow) -> list[_Unit]:
    """Rule 1: the parameterised children of `module` and its direct parameters, as units."""
    units = [
        _Unit(f"{prefix}.{local}" if prefix else local, None)
        for local, _ in module.named_parameters(recurse=False)
    ]
    for local, child in module.named_children():
        name = f"{prefix}.{local}" if prefix else local
        if not _has_parameters(child):
            continue
        called_below = any(
            f"{name}.{sub}" in flow.first_use for sub, _ in child.named_modules() if sub
        )
        if name not in flow.first_use and called_below:
            units.extend(_units_of(child, name, flow))
        else:
            units.append(_Unit(name, child))
    return units


def _runs_branches(unit: _Unit, flow: _Flow) -> bool:
    """Rule 3: a block of blocks whose children do not run as a plain chain."""
    if unit.module is None:
        return False
    children = _units_of(unit.module, unit.name, flow)
    blocks = [c for c in children if c.module is not None]
    if len(blocks) < 2 or not all(_has_parameterised_children(c.module) for c in blocks):
        return False
    if len(blocks) != len(children):
        return True  # a parameter of its own is read alongside its children
    ordered = sorted(children, key=lambda c: flow.first_use.get(c.name, math.inf))
    previous = _INPUT
    for child in ordered:
        if flow.reads.get(child.name) != {previous}:
            return True
        previous = child.name
    return flow.output_reads.get(unit.name) != {previous}


def _first_use(unit: _Unit, flow: _Flow) -> float:
    if unit.module is None:
        return flow.first_use.get(unit.name, math.inf)
    times = [flow.first_use.get(unit.name, math.inf)]
    times += [
        flow.first_use.get(f"{unit.name}.{n}", math.inf) for n, _ in unit.module.named_parameters()
    ]
    return min(times)


def layer_groups(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerGroup]:
    """The model's layer groups in data-flow order (section 4, the FDF strategy).

    `input_shape` is one sample's shape, (C, H, W) for images: (3, 32, 32) for CIFAR, (1, 28, 28)
    for MNIST. Runs one forward pass of a batch of 2 in eval mode without gradients and restores
    every module's training mode afterwards. The grouping rule is in the module docstring.
    Returns the groups, first to last; each parameter of `model.named_parameters()` is in exactly
    one. Raises ValueError for a model without parameters or a bad `input_shape`; an error of
    the forward pass itself is re-raised with a note naming the batch shape.
    """
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            f"input_shape {input_shape!r} is not a shape of positive ints; expected one "
            "sample's shape such as (3, 32, 32) or (1, 28, 28)"
        )
    if not _has_parameters(model):
        raise ValueError(f"{type(model).__name__} has no parameters: there is nothing to group")
    if not _has_parameterised_children(model):
        # a single layer: its parameters move together
        names = tuple(name for name, _ in model.named_parameters())
        return [LayerGroup(name="+".join(names), modules=names, parameters=names)]
    flow = _record_flow(model, shape)

    # rule 2: split trunks and wrappers while one holds more than half of the layers
    total_layers = _layer_count(model)
    units = _units_of(model, "", flow)
    while True:
        index = next(
            (
                i
                for i, u in enumerate(units)
                if u.module is not None
                and _has_parameterised_children(u.module)
                and 2 * _layer_count(u.module) > total_layers
            ),
            None,
        )
        if index is None:
            break
        units[index : index + 1] = _units_of(units[index].module, units[index].name, flow)

    # rule 3: parallel branches, one level
    split: list[_Unit] = []
    for unit in units:
        if _runs_branches(unit, flow):
            children = _units_of(unit.module, unit.name, flow)
            split.extend(replace(child, branch_of=unit.name) for child in children)
        else:
            split.append(unit)

    # rule 4: data-flow order; units never reached last, in registration order
    names = [name for name, _ in model.named_parameters()]
    owned = {u.name: _owned(u, names) for u in split}
    split = [u for u in split if owned[u.name]]  # parameters shared with an earlier module
    registration = {u.name: names.index(owned[u.name][0]) for u in split}
    ordered = sorted(split, key=lambda u: (_first_use(u, flow), registration[u.name]))
    unused = [u.name for u in ordered if _first_use(u, flow) == math.inf]
    if unused:
        logger.warning(
            "%s: the forward pass never reaches %s; their parameters form the last group(s)",
            type(model).__name__,
            ", ".join(unused),
        )

    # rule 5: a normalization layer joins the unit it normalizes
    chains: list[list[_Unit]] = []
    for unit in ordered:
        if (
            chains
            and isinstance(unit.module, NORM_TYPES)
            and unit.branch_of == chains[-1][-1].branch_of
            and flow.reads.get(unit.name) == {chains[-1][-1].name}
        ):
            chains[-1].append(unit)
        else:
            chains.append([unit])

    groups = [
        LayerGroup(
            name="+".join(u.name for u in chain),
            modules=tuple(u.name for u in chain),
            parameters=tuple(p for u in chain for p in owned[u.name]),
            branch_of=chain[0].branch_of,
        )
        for chain in chains
    ]
    assigned = sorted(p for g in groups for p in g.parameters)
    assert assigned == sorted(names), "every parameter must be in exactly one layer group"
    logger.debug(
        "%s: %d layer groups: %s",
        type(model).__name__,
        len(groups),
        ", ".join(g.name for g in groups),
    )
    return groups


def _owned(unit: _Unit, names: Sequence[str]) -> list[str]:
    """The parameter names (from `named_parameters`, shared ones once) that belong to `unit`."""
    if unit.module is None:
        return [n for n in names if n == unit.name]
    return [n for n in names if n.startswith(unit.name + ".")]


def derive_fdf_phases(
    model: nn.Module,
    input_shape: tuple[int, ...],
    iterations_per_phase: int,
    final_iterations: int,
    steps: StepSizes,
) -> list[PhaseSpec]:
    """Algorithm 1's phases by the FDF strategy (section 4; Table 2, the DLA and CCT7 FDF rows).

    With groups g_1..g_n from `layer_groups`, phase k (k < n) applies to g_1..g_k and runs
    `iterations_per_phase` iterations T; the last phase applies to all layers (which adds g_n)
    and runs `final_iterations`, like Table 2's "Phase 21 all layers" for DLA. Every phase moves
    with the same `steps` (step_f, step_a, step_c). Returns n phases; a model with a single group
    gets the all-layers phase only.
    """
    if iterations_per_phase < 1 or final_iterations < 1:
        raise ValueError(
            f"iterations_per_phase={iterations_per_phase} and final_iterations="
            f"{final_iterations}: both must be at least 1"
        )
    groups = layer_groups(model, input_shape)
    step_sizes = {"step_f": steps.step_f, "step_a": steps.step_a, "step_c": steps.step_c}

    phases = []
    patterns: list[str] = []
    for k, group in enumerate(groups[:-1], start=1):
        patterns = patterns + list(group.modules)
        name = f"Phase {k}: {group.name}" if k == 1 else f"Phase {k}: + {group.name}"
        phases.append(
            PhaseSpec(name=name, layers=patterns, iterations=iterations_per_phase, **step_sizes)
        )
    phases.append(
        PhaseSpec(
            name=f"Phase {len(groups)}: all layers",
            layers=["*"],
            iterations=final_iterations,
            **step_sizes,
        )
    )
    logger.info(
        "%s: %d FDF phases from layer groups %s",
        type(model).__name__,
        len(phases),
        ", ".join(g.name for g in groups),
    )
    return phases
