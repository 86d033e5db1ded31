"""The concept model's one-step students: NASA-T (the pack's own ``nodes.train.loop.Trainer``, VSD with NASA in
the student, alpha ~ U(0, 1)) and a control trained the same way with alpha fixed at 0.

    .host/venv/bin/python bench/concept/students.py --which student        [--steps 5000] [--threads 1]
    .host/venv/bin/python bench/concept/students.py --which student_alpha0 [--steps 5000]

Training pairs (``training_pairs``): ``N_PAIRS`` captions drawn from the training distribution (seeded), each with
a negative naming one value of an attribute the caption leaves free (a colour for "circle", "dot" or a background
for "red square", ...); the trainer cycles through them. Settings (``SETTINGS``): the trainer's paper defaults
(t in [20, 980], alpha ~ U(0, 1)) except what a LoRA student on this model needs: LoRA on attention +
feed-forward at rank 32 (scale lora_alpha / rank = 2, the paper's 128 / 64), batch 4, latent 4x4, both learning
rates 1e-4 and kappa ~ U(1, 2). Why (400-step probes on the previous base, 1 thread, logging the losses and the
student's x0 std; the data's latent std is ~1.0): at lr 1e-3 / 1e-3 and the paper's kappa U(0.5, 4) the student's
objective rose 2.5 -> 7.7, the LoRA teacher's loss 0.36 -> 0.56 and x0 std 1.37 -> 1.89 (the 2,000-step students
ended at ~50 / 1.0: no scene drawn); student lr 1e-4 only slowed it (1.4 -> 2.8, x0 std 1.02 -> 1.41: kappa up
to 4 pulls towards CFG-4 images, and CFG above ~3 breaks scenes in this world); kappa U(1, 2) with the LoRA
teacher at 1e-3 held until step ~300 and then the teacher's loss doubled (0.17 -> 0.36); with the teacher at
1e-4 too, 500 steps held (objective 0.2-0.5, teacher 0.15-0.25, x0 std 0.96-1.22).
Each run writes weights/<which>.safetensors (LoraLoaderModelOnly format) and weights/<which>.json (config, losses).
"""
from __future__ import annotations

import argparse
import json
import os
import logging
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
import host  # noqa: E402

host.enter_host()
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import comfy.lora  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
from nasa_pack.nodes.train.config import TrainConfig  # noqa: E402
from nasa_pack.nodes.train.loop import Trainer  # noqa: E402

import model as concept_model  # noqa: E402
import scenes  # noqa: E402

log = logging.getLogger("concept.students")
N_PAIRS, PAIR_SEED = 512, 7
SETTINGS = dict(batch_size=4, lr_student=1e-4, lr_teacher=1e-4, rank=32, lora_alpha=64.0, kappa=(1.0, 2.0),
                t_range=(20, 980), seed=1, targets="attention+ff", latent_size=scenes.SIZE // 8)
ALPHA = {"student": (0.0, 1.0), "student_alpha0": (0.0, 0.0)}


def file_for(which: str) -> Path:
    """The student's LoRA file: in weights/, or in $NASA_CONCEPT_STUDENT_DIR for a probe (a student trained with
    other settings, scored by evaluate.py from there, never committed in place of the real one)."""
    return Path(os.environ.get("NASA_CONCEPT_STUDENT_DIR", concept_model.WEIGHTS)) / f"{which}.safetensors"


def training_pairs(n: int = N_PAIRS, seed: int = PAIR_SEED) -> list:
    """(positive, negative) prompts: a training caption and one value of an attribute it leaves free."""
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        scene = scenes.sample_scene(g)
        named = {a: bool(torch.rand(1, generator=g) < scenes.NAME_P) for a in ("size", "colour", "shape", "background")}
        positive = scenes.caption(scene, named)
        free = [a for a, on in named.items() if not on and a != "shape"] + list(scenes.EXTRAS)
        attr = free[int(torch.randint(len(free), (1,), generator=g))]
        options = scenes.ATTRIBUTES.get(attr)  # None for an extra object (shape is never left free here)
        negative = attr if options is None else list(options)[int(torch.randint(len(options), (1,), generator=g))]
        if positive:
            out.append((positive, negative))
    return out


def config_and_pairs(encoder, steps: int, alpha: tuple, **overrides) -> tuple:
    """The students' TrainConfig (``SETTINGS`` with ``overrides``) and their encoded training pairs."""
    config = TrainConfig(steps=steps, alpha=alpha, checkpoint_every=10 ** 9, **(SETTINGS | overrides))
    return config, [(encoder.conditioning(p)[0], encoder.conditioning(n)[0]) for p, n in training_pairs()]


def train(which: str, steps: int, every: int = 25, lr: float | None = None) -> dict:
    patcher, encoder = concept_model.load()
    config, pairs = config_and_pairs(encoder, steps, ALPHA[which], **({} if lr is None else {"lr_student": lr}))
    start = time.perf_counter()

    def on_step(step, losses):
        if step == 1 or step % every == 0 or step == steps:
            log.info("%s step %d/%d  student %.4g  teacher %.4g  %.0f s", which, step, steps, losses["student"],
                     losses["teacher"], time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as checkpoints:
        result = Trainer(patcher, pairs, config, Path(checkpoints)).run(on_step=on_step, resume=False)
    if result.status != "done":
        raise RuntimeError(f"NASA-T stopped early ({result.status}) at step {result.steps_done}")
    wall = time.perf_counter() - start
    lora = {k: v.to(torch.float16).contiguous() for k, v in result.student_lora.items()}  # 2 MB, not 4
    comfy.utils.save_torch_file(lora, str(file_for(which)),
                                metadata={"nasa_t_config": json.dumps(config.as_dict()),
                                          "trained_on": "bench/concept (SD1.5-family concept model)"})
    report = {"which": which, "config": config.as_dict(), "wall_s": wall, "steps_per_s": steps / wall,
              "losses": result.losses}
    file_for(which).with_suffix(".json").write_text(json.dumps(report))
    return report


def load(patcher, which: str, strength: float = 1.0):
    """The base with a student LoRA, as LoraLoaderModelOnly builds it. Refuses keys the host does not map."""
    lora = comfy.utils.load_torch_file(str(file_for(which)), safe_load=True)
    key_map = comfy.lora.model_lora_keys_unet(patcher.model, {})
    layers = {k.removesuffix(s) for k in lora for s in (".lora_up.weight", ".lora_down.weight", ".alpha")
              if k.endswith(s)}
    if layers - set(key_map):
        raise ValueError(f"{file_for(which)}: LoRA layers the host does not map, e.g. {sorted(layers - set(key_map))[:2]}")
    return comfy.sd.load_lora_for_models(patcher, None, lora, strength, 0)[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--which", choices=sorted(ALPHA), required=True)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, help="a probe: the student's learning rate (default 1e-4); write it to "
                    "$NASA_CONCEPT_STUDENT_DIR, not weights/")
    args = ap.parse_args(argv)
    if args.lr is not None and "NASA_CONCEPT_STUDENT_DIR" not in os.environ:
        ap.error("--lr is a probe: set NASA_CONCEPT_STUDENT_DIR so that the committed student stays as trained")
    file_for(args.which).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    report = train(args.which, args.steps, lr=args.lr)
    log.info("%s: %d steps in %.0f s (%.2f steps/s) -> %s", args.which, args.steps, report["wall_s"],
             report["steps_per_s"], file_for(args.which))


if __name__ == "__main__":
    main()
