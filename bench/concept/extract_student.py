"""A fully fine-tuned student (``full_student.py``'s ``.diff`` file) as a rank-R LoRA, extracted with ComfyUI's
own ``extract_lora`` (the SVD of each weight difference, clamped at its 0.99 quantile: what the core LoraSave
node writes for a model difference), so that a full student fits the issue's weights budget.

    .host/venv/bin/python bench/concept/extract_student.py IN.safetensors OUT.safetensors RANK
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
import host  # noqa: E402

host.enter_host()

import comfy.utils  # noqa: E402
from comfy_extras.nodes_lora_extract import extract_lora  # noqa: E402


def extract(diffs: dict, rank: int) -> dict:
    """``{<layer>.diff: D}`` -> ``{<layer>.lora_up.weight, <layer>.lora_down.weight}`` at ``rank`` (fp16), with no
    ``.alpha`` key (ComfyUI then applies up @ down at scale 1, as for LoraSave's files)."""
    out = {}
    for key, diff in diffs.items():
        layer = key.removesuffix(".diff")
        up, down = extract_lora(diff.float(), rank)
        out[f"{layer}.lora_up.weight"] = up.contiguous().half()
        out[f"{layer}.lora_down.weight"] = down.contiguous().half()
    return out


def main(argv) -> None:
    src, dst, rank = Path(argv[0]), Path(argv[1]), int(argv[2])
    lora = extract(comfy.utils.load_torch_file(str(src), safe_load=True), rank)
    comfy.utils.save_torch_file(lora, str(dst))
    n = sum(v.numel() for v in lora.values())
    print(f"{dst}: rank {rank}, {len(lora) // 2} layers, {n} parameters, {dst.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
