"""Analytic FLOP counts of the chapters' networks and of one GAN train step, from the layers themselves.

A FLOP here is one multiply or one add: a multiply-accumulate (MAC) counts 2. Only the layers that multiply
a weight tensor into their input are counted:

  Dense (and any layer whose `kernel` is 2-D: pgan's EqualizedDense)     2 * rows * in * units
      rows = every position the kernel is applied at (batch x all axes but the last: SRGAN's per-position Dense)
  Conv1D/2D/3D (and any layer with a (k..., in, out) `kernel`:           2 * output positions * out * (k^d * in / groups)
      pgan's EqualizedConv2D, the 3-D chapter's SlotConv3D)
  Conv2DTranspose/Conv3DTranspose (a class name with "Transpose")        2 * input positions * in * k^d * out
  DepthwiseConv / SeparableConv                                          depthwise 2 * out positions * k^d * channels
                                                                         (+ the pointwise 1x1 conv)
  MinibatchDiscrimination                                                its projection matmul, 2 * batch * in * M*C

Everything else counts 0: bias adds, activations, batch/pixel/instance norm, pooling, upsampling, bicubic
resizing, concatenation, label tiling (Age-cGAN's TileLabels), minibatch stddev, fades, reshapes. On these
networks they are a few percent of the convolutions' FLOPs (though not of their time: they are memory-bound),
so the counts are the MAC-heavy work a training step cannot avoid, the numerator of a model-FLOPs
utilisation (MFU). Counts are the model's analytic ones: SlotConv3D, which pads its input channels to 8 inside
the step, is counted with its real channels.

`forward_flops(model, batch)` walks a functional model's graph (nested functional models too) with the
concrete shapes of `batch` examples, so models with None spatial dimensions (SRGAN's fully convolutional
networks) need `input_shape`. `train_step_flops` turns forward counts into one GAN step's count with the rule
backward = 2 x forward (gradients with respect to the activations and to the weights, each about one forward):
D step = G forward (the fakes) + 3 x D forward on the real and on the fake batch; G step = 3 x G + 2 x D
(D forward + its gradient with respect to its input only: D's weights get none).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

# custom layers whose FLOPs the generic rules below do not see: {class: fn(layer, input_shapes, output_shapes)}
_RULES: dict[type, Callable[[Any, list, list], float]] = {}


def register(layer_class: type, rule: Callable[[Any, list, list], float]) -> None:
    """Counts `layer_class` (and its subclasses) with `rule(layer, input_shapes, output_shapes) -> FLOPs`."""
    _RULES[layer_class] = rule


def _prod(values) -> int:
    return math.prod(int(v) for v in values)


def _check(shape: Sequence, layer) -> None:
    if any(d is None for d in shape):
        raise ValueError(f"layer {layer.name!r} has a shape with unknown dimensions {tuple(shape)}: pass "
                         "forward_flops an input_shape with every dimension")


def dense_flops(input_shape: Sequence[int], units: int) -> float:
    """A (in, units) matmul applied over the last axis of `input_shape` (batch included)."""
    return 2.0 * _prod(input_shape[:-1]) * int(input_shape[-1]) * int(units)


def conv_flops(output_shape: Sequence[int], kernel_shape: Sequence[int]) -> float:
    """A channels-last convolution with a (k..., in / groups, out) kernel: every output value is a dot product
    of k^d x (in / groups) terms."""
    return 2.0 * _prod(output_shape) * _prod(kernel_shape[:-2]) * int(kernel_shape[-2])


def conv_transpose_flops(input_shape: Sequence[int], kernel_shape: Sequence[int]) -> float:
    """A transposed convolution: every input value is scattered through k^d x out weights.

    Keras stores the transposed kernel as (k..., out, in)."""
    return 2.0 * _prod(input_shape) * _prod(kernel_shape[:-2]) * int(kernel_shape[-2])


def _kernel_shape(layer) -> tuple[int, ...] | None:
    kernel = getattr(layer, "kernel", None)
    return None if kernel is None else tuple(int(d) for d in kernel.shape)


def layer_flops(layer, input_shapes: list, output_shapes: list) -> float:
    """Forward FLOPs of one call of `layer` on inputs of `input_shapes` giving `output_shapes` (batch included)."""
    for cls in type(layer).__mro__:
        if cls in _RULES:
            return float(_RULES[cls](layer, input_shapes, output_shapes))
    name = type(layer).__name__
    if "Depthwise" in name or "Separable" in name:
        return _depthwise_or_separable(layer, input_shapes[0], output_shapes[0])
    kernel = _kernel_shape(layer)
    if kernel is None or not input_shapes or not output_shapes:
        return 0.0
    x, y = input_shapes[0], output_shapes[0]
    _check(x, layer), _check(y, layer)
    if len(kernel) == 2:  # Dense, EqualizedDense: over the last axis
        return dense_flops(x, kernel[1])
    if "Transpose" in name:
        return conv_transpose_flops(x, kernel)
    return conv_flops(y, kernel)


def _depthwise_or_separable(layer, x, y) -> float:
    _check(x, layer), _check(y, layer)
    kernel = getattr(layer, "depthwise_kernel", None)
    if kernel is None:
        return 0.0
    k = tuple(int(d) for d in kernel.shape)  # (k..., in, multiplier)
    depthwise_out = (*y[:-1], k[-2] * k[-1])
    flops = 2.0 * _prod(depthwise_out) * _prod(k[:-2])
    pointwise = getattr(layer, "pointwise_kernel", None)
    if pointwise is not None:
        flops += 2.0 * _prod(y) * k[-2] * k[-1]
    return flops


def _minibatch_discrimination(layer, inputs, outputs) -> float:
    x = inputs[0]
    _check(x, layer)
    return dense_flops(x, int(layer.num_kernels) * int(layer.kernel_dim))


def _register_project_layers() -> None:
    try:
        from common.layers import MinibatchDiscrimination
    except ImportError:  # pragma: no cover
        return
    _RULES.setdefault(MinibatchDiscrimination, _minibatch_discrimination)


# --- walking a functional graph -------------------------------------------------------------------------------

def _functional(model):
    """The functional graph of a Functional or built Sequential model, else None."""
    if hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth"):
        return model
    inner = getattr(model, "_functional", None)
    return inner if inner is not None and hasattr(inner, "_run_through_graph") else None


def _shapes(structure) -> list[tuple]:
    import keras

    flat = keras.tree.flatten(structure)
    return [tuple(t.shape) for t in flat if hasattr(t, "shape")]


def layer_calls(model, batch: int = 1, input_shape=None) -> list[tuple]:
    """(layer, input shapes, output shapes, FLOPs, name) of every layer call of `model`'s forward pass on `batch`
    examples, in graph order; `input_shape` as for flops_by_layer. The layer objects are the model's own."""
    import keras

    graph = _functional(model)
    if graph is None:
        raise TypeError(f"{getattr(model, 'name', model)!r} is not a functional model: count its functional "
                        "sub-networks (generator, discriminator) and combine them with train_step_flops")
    _register_project_layers()
    own = [tuple(t.shape[1:]) for t in graph.inputs]
    if input_shape is None:
        shapes = own
    elif len(own) == 1 and (not input_shape or not isinstance(input_shape[0], (tuple, list))):
        shapes = [tuple(input_shape)]
    else:
        shapes = [tuple(s) for s in input_shape]
    if len(shapes) != len(own):
        raise ValueError(f"{model.name} has {len(own)} inputs, got {len(shapes)} input shapes")
    inputs = [keras.KerasTensor((batch, *s), dtype=t.dtype) for s, t in zip(shapes, graph.inputs)]
    calls: list[tuple] = []
    _walk(graph, inputs, calls, prefix="")
    return calls


def flops_by_layer(model, batch: int = 1, input_shape=None) -> list[dict]:
    """[{"layer", "class", "input", "output", "flops"}] for every layer call of `model`'s forward pass.

    `input_shape`: one input's shape without the batch axis, or a list of them (one per model input); default
    the model's own input shapes, which must then be fully known. Nested functional models are walked into
    (their layers are named "outer/inner"). "input" and "output" are the first input's and output's shapes.
    """
    return [{"layer": name, "class": type(op).__name__, "input": ins[:1], "output": outs[:1], "flops": flops}
            for op, ins, outs, flops, name in layer_calls(model, batch, input_shape)]


def _walk(graph, inputs, calls: list, prefix: str):
    def operation_fn(op):
        inner = _functional(op) if isinstance(op, _keras_model()) else None
        if inner is not None:
            def nested(*args, **kwargs):
                return _walk(inner, _flat_tensors(args), calls, prefix=f"{prefix}{op.name}/")
            return nested

        def counted(*args, **kwargs):
            outputs = op.compute_output_spec(*args, **kwargs)
            in_shapes, out_shapes = _shapes(args), _shapes(outputs)
            calls.append((op, in_shapes, out_shapes, layer_flops(op, in_shapes, out_shapes), prefix + op.name))
            return outputs

        return counted

    return graph._run_through_graph(inputs, operation_fn=operation_fn)


def _flat_tensors(structure) -> list:
    import keras

    return [t for t in keras.tree.flatten(structure) if hasattr(t, "shape")]


def _keras_model():
    import keras

    return keras.Model


def forward_flops(model, batch: int = 1, input_shape=None) -> float:
    """FLOPs of one forward pass of a functional `model` on `batch` examples (see the module docstring)."""
    return float(sum(row["flops"] for row in flops_by_layer(model, batch, input_shape)))


# --- a train step ---------------------------------------------------------------------------------------------

BACKWARD = 2.0  # backward = 2 x forward: the gradient with respect to the activations and to the weights


def train_step_flops(g_forward: float, d_forward: float, *, fakes_for_d: bool = True, wgan_gp: bool = False,
                     r1: bool = False, extra: float = 0.0) -> dict[str, float]:
    """One GAN step from the forward FLOPs of G and D at the step's batch (D's on ONE batch of images).

    D step: G forward for the fakes (`fakes_for_d`; False where the G step reuses the same fakes, SRGAN) +
            (1 + BACKWARD) x D forward on the real batch and on the fake batch (6 x D).
            With `wgan_gp`, the gradient penalty adds D forward on the interpolates, its input gradient
            (1 x D) and the weights' gradient through both (2 x 2 x D): 12 x D in all (an estimate: the
            second-order pass is counted with the same backward = 2 x forward rule).
            With `r1` (PGAN's default logistic loss), R1 differentiates D at the reals it scores anyway: its input
            gradient (1 x D) and the weights' gradient through it (2 x D), 9 x D in all.
    G step: (1 + BACKWARD) x G + D forward + D's input gradient (2 x D).
    `extra`: FLOPs of anything else in the step (SRGAN's VGG content loss), added to the G step.
    """
    d_per_batch = (1.0 + BACKWARD) * d_forward
    d_step = (g_forward if fakes_for_d else 0.0) + 2 * d_per_batch
    if wgan_gp:
        d_step += d_forward + d_forward + BACKWARD * 2 * d_forward
    if r1:
        d_step += d_forward + BACKWARD * d_forward
    g_step = (1.0 + BACKWARD) * g_forward + 2.0 * d_forward + extra
    return {"d_step": d_step, "g_step": g_step, "total": d_step + g_step}


def gan_step_flops(generator, discriminator, batch: int, g_input_shape=None, d_input_shape=None,
                   **kwargs) -> dict[str, float]:
    """train_step_flops of a functional generator and discriminator at `batch` examples per step; also
    returns the forward counts ("g_forward", "d_forward")."""
    g = forward_flops(generator, batch, g_input_shape)
    d = forward_flops(discriminator, batch, d_input_shape)
    return {"g_forward": g, "d_forward": d, **train_step_flops(g, d, **kwargs)}


def srgan_step_flops(generator, discriminator, vgg, batch: int, hr_size: int, scale: int = 4) -> dict[str, float]:
    """SRGAN's step (chapters.srgan.models.SRGAN.train_step): SR is generated once and reused; the content
    loss runs VGG forward on HR and on SR and takes SR's input gradient through it (3 x VGG forward).
    `vgg` None: the pixel-MSE content loss."""
    lr = hr_size // scale
    g = forward_flops(generator, batch, (lr, lr, 3))
    d = forward_flops(discriminator, batch, (hr_size, hr_size, 3))
    v = forward_flops(vgg, batch, (hr_size, hr_size, 3)) if vgg is not None else 0.0
    return {"g_forward": g, "d_forward": d, "vgg_forward": v,
            **train_step_flops(g, d, fakes_for_d=False, extra=3.0 * v)}
