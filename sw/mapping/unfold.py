"""The configuration-dependent pass: unfold a thin first layer's windows on the host."""

from __future__ import annotations

from ..config import AcceleratorConfig
from ..ir.graph import INPUT, QGraph
from .mapper import map_bytes


def im2col_input(graph: QGraph, config: AcceleratorConfig) -> QGraph:
    """Unfold the windows of the convolution that reads the network input on the host, when it
    is the input's only reader, its input has fewer channels than the PE array has input lanes
    and the unfolded map fits half the activation memory, and beside the layer's output (with
    external memory, where a streamed program keeps it: a band of one output row fits half).

    That layer becomes a 1x1 convolution over ``C*KH*KW x OH x OW`` (channel order
    ``c, ky, kx``) and the graph records ``input_im2col`` so the host unfolds the input image
    the same way (`golden.im2col`; with ``pad_extra`` the spec ends with its two values). With
    one input channel and 4 lanes a 5x5 layer then needs 7 cycles per pixel instead of 25.
    """
    readers = graph.consumers(INPUT)
    if len(readers) != 1 or graph.readers(INPUT) != 1 or graph.input_im2col:
        return graph
    first = readers[0]
    c = first.in_shape[0]
    if first.op != "conv" or c >= config.pe_in or first.kernel == (1, 1) or first.channel_offset \
            or first.dilation != (1, 1):    # unfolded, its zero taps would cost lanes
        return graph
    o, _, kh, kw = first.weight.shape
    _, oh, ow = first.conv_shape
    unfolded_bytes = map_bytes((c * kh * kw, oh, ow), config)
    unfolded = first.replace(in_shape=(c * kh * kw, oh, ow), stride=(1, 1), padding=(0, 0),
                             pad_extra=(0, 0), weight=first.weight.reshape(o, c * kh * kw, 1, 1))
    if config.ext_bytes:
        # streamed, the unfolded input stays in external memory: a band of one output row
        # (with its pooling window's rows) must fit half the activation memory
        from .bands import band
        top = band(unfolded, 0, 1)
        if top is None or map_bytes(top.layer.in_shape, config) + \
                map_bytes(top.layer.out_shape, config) > config.act_bytes // 2:
            return graph
    elif unfolded_bytes > config.act_bytes // 2 or \
            unfolded_bytes + map_bytes(first.out_shape, config) > config.act_bytes:
        return graph            # the unfolded input and the layer's output must fit together
    extra = tuple(first.pad_extra) if any(first.pad_extra) else ()
    return graph.replace(layers=tuple(unfolded if layer is first else layer
                                      for layer in graph.layers),
                         input_im2col=(kh, kw) + tuple(first.stride) + tuple(first.padding)
                         + extra)
