"""The frontend's side of a workflow, as the tests need it: which inputs of a node are widgets (in the order of a UI
workflow's ``widgets_values``), whether a widget value is valid for its input spec, and the UI format -> API
format conversion that the frontend's queue does (read from ComfyUI's ``/object_info`` specs, not hard-coded)."""
from __future__ import annotations

import numpy as np

FRONTEND_ONLY = {"Note", "MarkdownNote"}  # virtual nodes: the frontend draws them, the server never sees them
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def widget_inputs(info: dict) -> list:
    """(name, spec, has control_after_generate) of a node's widgets, in the frontend's widgets_values order."""
    out = []
    for group in ("required", "optional"):
        specs = info["input"].get(group, {})
        for name in info.get("input_order", {}).get(group, list(specs)):
            spec = specs[name]
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 else {}
            if (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput"):
                out.append((name, spec, bool(opts.get("control_after_generate"))))
    return out


def check_value(where: str, spec: list, value) -> None:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list) or kind == "COMBO":
        options = kind if isinstance(kind, list) else opts.get("options", [])
        assert value in options, f"{where}: {value!r} not in {options[:20]}"
    elif kind in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r}"
        if kind == "INT":
            assert float(value).is_integer(), f"{where}: {value!r} is not an integer"
        assert opts.get("min", -np.inf) <= value <= opts.get("max", np.inf), f"{where}: {value} out of range"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {value!r}"
    else:
        assert isinstance(value, str), f"{where}: {value!r}"


def to_api(data: dict, infos: dict) -> dict:
    """UI format -> API format, as the frontend's queue does it (Note nodes dropped)."""
    links = {link[0]: link for link in data["links"]}
    prompt = {}
    for node in data["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        values, inputs = iter(node.get("widgets_values", [])), {}
        for name, _spec, control in widget_inputs(infos[node["type"]]):
            inputs[name] = next(values)
            if control:
                next(values)
        for slot in node["inputs"]:
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
