"""A small builder for ComfyUI UI-format workflows (what the frontend's Save writes: nodes with positions, sizes,
slots and widgets_values, links, groups, version 0.4), used by ``scripts/make_workflows.py``.

Slot names and types of the node types the examples use are listed in ``SLOTS``; the tests check every one of
them against a running server's ``/object_info``, so a typo here fails there.
"""
from __future__ import annotations

import uuid
from typing import Dict, List, Optional, Sequence, Tuple

# node type -> (link inputs [(name, type)], outputs [(name, type)])
SLOTS: Dict[str, Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]] = {
    "UNETLoader": ([], [("MODEL", "MODEL")]),
    "DualCLIPLoader": ([], [("CLIP", "CLIP")]),
    "VAELoader": ([], [("VAE", "VAE")]),
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "NASAApply": ([("model", "MODEL"), ("negative", "CONDITIONING")], [("MODEL", "MODEL")]),
    "NASATimestepSigmas": ([("model", "MODEL")], [("SIGMAS", "SIGMAS")]),
    "ModelSamplingDiscrete": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "EmptyLatentImage": ([], [("LATENT", "LATENT")]),
    "EmptySD3LatentImage": ([], [("LATENT", "LATENT")]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "RandomNoise": ([], [("NOISE", "NOISE")]),
    "BasicGuider": ([("model", "MODEL"), ("conditioning", "CONDITIONING")], [("GUIDER", "GUIDER")]),
    "KSamplerSelect": ([], [("SAMPLER", "SAMPLER")]),
    "SamplerCustomAdvanced": ([("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"),
                               ("sigmas", "SIGMAS"), ("latent_image", "LATENT")],
                              [("output", "LATENT"), ("denoised_output", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "ImageStitch": ([("image1", "IMAGE"), ("image2", "IMAGE")], [("IMAGE", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], [("images", "IMAGE")]),
    "Note": ([], []),
}
FRONTEND_ONLY = {"Note"}  # virtual nodes: the frontend draws them, the server never sees them
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"


class Graph:
    def __init__(self) -> None:
        self.nodes: List[dict] = []
        self.links: List[list] = []
        self.groups: List[dict] = []

    def node(self, type_: str, pos: Sequence[float], size: Sequence[float], widgets: Sequence = (),
             inputs: Optional[Dict[str, Tuple[dict, int]]] = None, title: Optional[str] = None) -> dict:
        """Add a node; ``inputs`` maps an input name to (source node, output slot)."""
        link_inputs, outputs = SLOTS[type_]
        node = {
            "id": len(self.nodes) + 1, "type": type_, "pos": list(pos), "size": list(size), "flags": {},
            "order": len(self.nodes), "mode": 0,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in link_inputs],
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
            "properties": {"Node name for S&R": type_},
            "widgets_values": list(widgets),
        }
        if title:
            node["title"] = title
        if type_ in FRONTEND_ONLY:
            node.update(color=NOTE_COLOR, bgcolor=NOTE_BGCOLOR, properties={})
        self.nodes.append(node)
        for name, (src, slot) in (inputs or {}).items():
            self.connect(src, slot, node, name)
        return node

    def note(self, text: str, pos: Sequence[float], size: Sequence[float], title: str = "Read me") -> dict:
        return self.node("Note", pos, size, [text], title=title)

    def connect(self, src: dict, slot: int, dst: dict, input_name: str) -> None:
        target = next(i for i, s in enumerate(dst["inputs"]) if s["name"] == input_name)
        link_id = len(self.links) + 1
        type_ = src["outputs"][slot]["type"]
        self.links.append([link_id, src["id"], slot, dst["id"], target, type_])
        src["outputs"][slot]["links"].append(link_id)
        dst["inputs"][target]["link"] = link_id

    def group(self, title: str, bounding: Sequence[float], color: str = "#3f789e") -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding),
                            "color": color, "font_size": 24, "flags": {}})

    def to_json(self, name: str) -> dict:
        order = _topological(self.nodes, self.links)
        for node in self.nodes:
            node["order"] = order[node["id"]]
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-nasa/workflows/{name}")), "revision": 0,
            "last_node_id": len(self.nodes), "last_link_id": len(self.links),
            "nodes": self.nodes, "links": self.links, "groups": self.groups, "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}, "frontendVersion": "1.47.12"},
            "version": 0.4,
        }


def _topological(nodes: List[dict], links: List[list]) -> Dict[int, int]:
    """Execution order as the frontend stores it (sources first; ties by id)."""
    deps = {n["id"]: set() for n in nodes}
    for _, src, _, dst, _, _ in links:
        deps[dst].add(src)
    order, done = {}, set()
    while len(done) < len(nodes):
        ready = sorted(i for i, d in deps.items() if i not in done and d <= done)
        for i in ready:
            order[i] = len(order)
            done.add(i)
    return order
