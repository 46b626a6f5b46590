"""Record what each sub-layer of a built model sees, for tests of residual joins (DeepNorm, Admin, ...)."""

from contextlib import contextmanager


@contextmanager
def sublayer_io(model):
    """Yield ``seen``: after a forward, ``seen[(stack, layer, sublayer)]`` holds the sub-layer's ``input``
    (attention query / fc1 input), its ``output`` (attention output / fc2 output, before dropout and the
    residual join) and ``norm_input`` (the input of the LayerNorm that belongs to it)."""
    seen = {}

    def keep_input(key, what):
        def hook(module, args, kwargs):  # attention is called with query=..., Linear/LayerNorm positionally
            seen.setdefault(key, {})[what] = kwargs["query"] if "query" in kwargs else args[0]
        return hook

    def keep_output(key):
        def hook(module, args, output):
            seen.setdefault(key, {})["output"] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = []
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, stack).layers):
            parts = {"self_attn": (layer.self_attn, layer.self_attn, layer.self_attn_layer_norm),
                     "ffn": (layer.fc1, layer.fc2, layer.final_layer_norm)}
            if getattr(layer, "encoder_attn", None) is not None:
                parts["encoder_attn"] = (layer.encoder_attn, layer.encoder_attn, layer.encoder_attn_layer_norm)
            for sub, (first, last, norm) in parts.items():
                key = (stack, i, sub)
                handles.append(first.register_forward_pre_hook(keep_input(key, "input"), with_kwargs=True))
                handles.append(last.register_forward_hook(keep_output(key)))
                handles.append(norm.register_forward_pre_hook(keep_input(key, "norm_input"), with_kwargs=True))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
