"""NASA-T Train (LoRA student): the paper's NASA-T distillation (arXiv 2412.02687; SwiftBrush v2 VSD) as a node.
The node part only: schema, prompt pairs, validation, progress and Cancel, the saved LoRA, the loss picture and the
output MODEL; the training is ``loop.Trainer``. Every input is checked before the first training step, so
bad input fails at once with the offending values and the fix, and nothing is written."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import comfy.model_management
import comfy.sd
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from .. import host_features
from ..families import model_name, unet
from .pairs import check_pairs

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
CONFIG_KEYS = ("steps", "batch_size", "lr_student", "lr_teacher", "rank", "lora_alpha", "seed", "checkpoint_every",
               "gradient_checkpointing", "precision")  # node inputs that are TrainConfig fields of the same name


def check_settings(s: dict) -> None:
    """All problems of the scalar inputs at once, each with its value and the fix."""
    problems = [f"{name} is {s[name]}; it must be >= 1" for name in ("steps", "batch_size", "rank", "checkpoint_every")
                if s[name] < 1]
    problems += [f"{name} is {s[name]}; it must be a finite number > 0 (paper: lr_teacher 1e-3, lora_alpha 128)"
                 for name in ("lr_student", "lr_teacher", "lora_alpha") if not (math.isfinite(s[name]) and s[name] > 0)]
    if not (math.isfinite(lo := s["kappa_min"]) and math.isfinite(hi := s["kappa_max"]) and 0 <= lo <= hi):
        problems.append(f"kappa_min {lo} and kappa_max {hi}: the teacher's CFG scale is drawn from U(kappa_min, "
                        f"kappa_max), so they need 0 <= kappa_min <= kappa_max (paper, SD1.5/SD2.1: 0.5 and 4)")
    if s["resolution"] < 0 or s["resolution"] % 64:
        problems.append(f"resolution is {s['resolution']}; use 0 (the model's native size) or a multiple of 64")
    if s["precision"] not in PRECISIONS:
        problems.append(f"precision is {s['precision']!r}; choose one of {PRECISIONS}")
    if problems:
        raise ValueError("NASA-T Train: " + "; ".join(problems))


def lora_file_stem(name: str) -> str:
    """The user's LoRA name as a plain file stem: saved as <loras folder>/<stem>.safetensors."""
    stem = str(name).strip()
    if stem.lower().endswith(".safetensors"):
        stem = stem[:-len(".safetensors")]
    if not stem or stem in (".", "..") or any(c in stem for c in "/\\:\0"):  # folders, drives (os.sep, altsep)
        raise ValueError(f"lora_name {name!r} is not a plain file name: use letters, digits, '-', '_' without "
                         f"folders, e.g. 'nasa_t_sd15'; it is saved as <loras folder>/<lora_name>.safetensors")
    return stem


def unet_width(model) -> int:
    dm = model.get_model_object("diffusion_model")
    layers = unet.cross_attention_layers(dm) if unet.matches(dm) else {}
    if not layers:
        raise ValueError(f"NASA-T Train trains UNet models with text cross-attention (SD1.x, SD2.x, SDXL); this "
                         f"model is {model_name(model)} ({type(dm).__name__}): load an SD1.5, SD2.1 or SDXL model")
    return unet.context_width(dm, layers)


def encode_prompt_pairs(text: str, clip) -> list:
    """``positive || negative`` per line (blank lines and ``#`` comments skipped), each side encoded with ``clip``
    as CLIPTextEncode does; a list of (positive entry, negative entry)."""
    lines = [(n, line.strip()) for n, line in enumerate((text or "").splitlines(), 1)
             if line.strip() and not line.strip().startswith("#")]
    if lines and clip is None:
        raise ValueError(f"prompt_pairs has {len(lines)} line(s) but no clip is connected: connect the CLIP of the "
                         f"model's checkpoint to encode them")
    pairs = []
    for n, line in lines:
        parts = line.split("||")
        if len(parts) != 2 or not parts[0].strip():
            raise ValueError(f"prompt_pairs line {n} {line!r} is not 'positive || negative': write one pair per "
                             f"line, e.g. 'a photo of a cat || blurry, lowres' (an empty negative is allowed)")
        encoded = [clip.encode_from_tokens_scheduled(clip.tokenize(part.strip())) for part in parts]
        if any(len(c) != 1 for c in encoded):  # scheduled CLIP hooks: one entry per schedule
            raise ValueError(f"prompt_pairs line {n} encodes to several entries: remove the CLIP hooks")
        pairs.append((encoded[0][0], encoded[1][0]))
    return pairs


def read_pairs(positive: list, negative: list, text_pairs: list, width: int, model: str) -> list:
    """Entry i of positive with negative entry i (or the only negative), then ``text_pairs``; checked by the
    Trainer's own rules (pairs.check_pairs), here, before anything is built."""
    if positive or negative:
        if not positive or len(negative) not in (1, len(positive)):
            raise ValueError(f"{len(positive)} positive and {len(negative)} negative entries: entry i of positive "
                             f"pairs with negative entry i; give as many negatives as positives, or one for all")
        negative = negative * len(positive) if len(negative) == 1 else negative
    elif not text_pairs:
        raise ValueError("no prompt pairs: connect positive and negative CONDITIONING, or write 'positive || "
                         "negative' lines in prompt_pairs and connect the clip")
    pairs = [*zip(positive, negative), *text_pairs]
    check_pairs(pairs, width, model)
    return pairs


def loss_curve(losses: list) -> torch.Tensor:
    """Both losses per step as an IMAGE (1, H, W, 3), each on its own scale (they differ by orders of magnitude).
    The host's draw_loss_graph draws one curve and divides by zero on a flat curve or a single step."""
    w, h, left, top = 512, 320, 16, 32
    draw = ImageDraw.Draw(img := Image.new("RGB", (w, h), "white"))
    draw.rectangle([left, top, w - left, h - 20], outline=(160, 160, 160))
    steps = [float(r["step"]) for r in losses]
    first, last = (steps[0], steps[-1]) if steps else (0.0, 0.0)
    draw.text((left, h - 16), f"step {first:g} to {last:g}" if steps else "no steps", fill="black")
    for row, (key, colour) in enumerate((("student", (30, 90, 200)), ("teacher", (220, 110, 20)))):
        values = [(s, float(r[key])) for s, r in zip(steps, losses) if math.isfinite(float(r[key]))]
        if not values:
            continue
        lo, hi = min(v for _, v in values), max(v for _, v in values)
        points = [(left + (w - 2 * left) * (s - first) / ((last - first) or 1.0),
                   h - 20 - (h - 20 - top) * ((v - lo) / ((hi - lo) or 1.0))) for s, v in values]
        draw.line(points if len(points) > 1 else points * 2, fill=colour, width=2)
        draw.text((left, 2 + 14 * row), f"{key}: {values[0][1]:.4g} -> {values[-1][1]:.4g} "
                                        f"(min {lo:.4g}, max {hi:.4g})", fill=colour)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def save_lora(state_dict: dict, stem: str, metadata: dict) -> str:
    """<loras folder>/<stem>.safetensors, written atomically (LoraLoaderModelOnly never lists a half file)."""
    folder = Path(folder_paths.get_folder_paths("loras")[0])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.safetensors"
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    comfy.utils.save_torch_file(tensors, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)
    log.info("NASA-T Train: student LoRA (%d tensors) saved to %s", len(tensors), path)
    return path.name


class Progress:
    """The Trainer's ``on_step``: ComfyUI's progress bar, the losses as the node's progress text, and a console
    line for the first step and then every 30 s."""

    def __init__(self, total: int, node_id):
        self.total, self.node_id, self.last_text, self.last_log = total, node_id, 0.0, None
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)
        server = sys.modules.get("server")  # ComfyUI's server module: there when main.py runs, not in scripts
        self.server = getattr(getattr(server, "PromptServer", None), "instance", None)

    def __call__(self, step: int, losses: dict) -> None:
        # After Cancel the host's progress hook raises: the Trainer must first see ``interrupted`` and checkpoint.
        if comfy.model_management.processing_interrupted():
            return
        self.bar.update_absolute(min(int(step), self.total), self.total)
        now, text = time.monotonic(), (f"step {step}/{self.total}\nstudent (VSD) {losses['student']:.4g}\n"
                                       f"LoRA teacher {losses['teacher']:.4g}")
        if self.last_log is None or now - self.last_log >= 30 or step >= self.total:
            self.last_log = now
            log.info("NASA-T Train: %s", text.replace("\n", ", "))
        if self.server is not None and self.node_id and (now - self.last_text >= 0.5 or step >= self.total):
            self.last_text = now
            self.server.send_progress_text(text, self.node_id)


class NASATrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        I, F = io.Int.Input, io.Float.Input  # noqa: N806
        return io.Schema(
            node_id="NASATrainLoRA", display_name="NASA-T Train (LoRA student)", category="model_patches/nasa",
            search_aliases=["NASA-T", "train one step", "distill", "VSD", "SwiftBrush", "train negative"],
            description=("NASA-T (arXiv 2412.02687): trains a one-step LoRA student that uses NASA negatives (VSD, "
                         "SwiftBrush v2). Use the LoRA with LoraLoaderModelOnly + NASA Apply at cfg 1, one step."),
            is_input_list=True,  # lists of CONDITIONING (e.g. from list nodes) become more prompt pairs
            is_output_node=True,  # trains and saves even when nothing is connected to its outputs
            inputs=[
                io.Model.Input("model", tooltip="The base model to distil (SD1.x, SD2.x, SDXL). Not modified."),
                io.Conditioning.Input("positive", optional=True, tooltip="Training prompts; entry i pairs with "
                                      "negative entry i (ConditioningCombine or list inputs give several)."),
                io.Conditioning.Input("negative", optional=True, tooltip="One per positive entry, or one for all."),
                io.Clip.Input("clip", optional=True, tooltip="Encodes prompt_pairs: the model's own CLIP."),
                io.String.Input("prompt_pairs", multiline=True, default="", optional=True, tooltip="More pairs, one "
                                "per line: 'positive || negative'. Blank lines and # comments are skipped."),
                I("steps", default=1000, min=1, max=1_000_000, tooltip="Training steps."),
                I("batch_size", default=1, min=1, max=1024, tooltip="Pairs per step, at most the number of pairs "
                  "(paper: 64 on 4 GPUs)."),
                I("resolution", default=0, min=0, max=4096, step=64, tooltip="Image side in pixels the student "
                  "learns (multiple of 64); 0 = the model's native size (512 SD1.x/SD2.x, 1024 SDXL)."),
                F("lr_student", default=1e-5, min=1e-8, max=1.0, step=1e-7, tooltip="AdamW learning rate of the "
                  "LoRA student (paper: 1e-6 for full fine-tuning)."),
                F("lr_teacher", default=1e-3, min=1e-8, max=1.0, step=1e-7, tooltip="AdamW learning rate of the "
                  "LoRA teacher (paper: 1e-3)."),
                I("rank", default=64, min=1, max=512, tooltip="LoRA rank of both sets (paper: 64)."),
                F("lora_alpha", default=128.0, min=0.01, max=4096.0, step=0.01, tooltip="LoRA alpha; scale = "
                  "alpha / rank (paper: 128)."),
                F("kappa_min", default=0.5, min=0.0, max=30.0, step=0.05, tooltip="The teacher's CFG scale is drawn "
                  "per step from U(kappa_min, kappa_max) (paper SD1.5/SD2.1: 0.5 to 4, PixArt 0.5 to 3)."),
                F("kappa_max", default=4.0, min=0.0, max=30.0, step=0.05, tooltip="Upper end of that range."),
                I("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seeds LoRA init, noise, timesteps "
                  "and scales: the same inputs give the same LoRA."),
                I("checkpoint_every", default=100, min=1, max=1_000_000, tooltip="Steps between checkpoints (both "
                  "LoRAs + optimiser states) in output/nasa_train/<lora_name>/."),
                io.Boolean.Input("gradient_checkpointing", default=False, tooltip="Recompute activations in the "
                                 "backward pass: less memory, slower."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="fp32", tooltip="fp32, or bf16 "
                               "autocast (less memory, faster on GPUs with bf16; the paper trains in bf16)."),
                io.String.Input("lora_name", default="nasa_t_student", tooltip="Saved as <loras folder>/"
                                "<lora_name>.safetensors (no folders; a file of that name is replaced)."),
                io.Boolean.Input("resume", default=True, tooltip="Continue from the newest checkpoint of this "
                                 "lora_name (same settings required; steps may grow)."),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The input model + the student LoRA (as "
                                     "LoraLoaderModelOnly, strength 1): one step, cfg 1, with NASA Apply."),
                     io.String.Output(display_name="lora_name", tooltip="The saved file as the loras list names it."),
                     io.Image.Output(display_name="loss_curve", tooltip="Student (blue), LoRA teacher (orange).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive=None, negative=None, clip=None, prompt_pairs=None, **settings) -> io.NodeOutput:
        model, pairs, s, stem = prepare(model, positive, negative, clip, prompt_pairs, settings)
        host_features.require_trainer()  # an older ComfyUI fails here, naming what it lacks, not inside training
        from .loop import TrainConfig, Trainer  # after the checks, which need no training code

        config = TrainConfig(**{k: s[k] for k in CONFIG_KEYS}, kappa=(s["kappa_min"], s["kappa_max"]),
                             latent_size=s["resolution"] // 8)
        config.validate()
        checkpoint_dir = Path(folder_paths.get_output_directory()) / "nasa_train" / stem
        node_id = getattr(cls.hidden, "unique_id", None) if cls.hidden else None
        log.info("NASA-T Train: %d pairs, %d steps; checkpoints in %s", len(pairs), config.steps, checkpoint_dir)
        with torch.inference_mode(False), torch.enable_grad():
            trainer = Trainer(model, pairs, config, checkpoint_dir)
            try:
                result = trainer.run(on_step=Progress(config.steps, node_id),
                                     interrupted=comfy.model_management.processing_interrupted, resume=s["resume"])
            except comfy.model_management.InterruptProcessingException:
                # Cancel mid-step: the host's layers raise at once (comfy.ops), before the Trainer's check between
                # steps. The step in flight is dropped; a run that stops at once checkpoints the last finished one.
                result = trainer.run(interrupted=lambda: True, resume=False)
            finally:
                trainer.release()
        return finish(cls, model, result, config, stem, checkpoint_dir)


def prepare(model, positive, negative, clip, prompt_pairs, settings: dict) -> tuple:
    """Every check before training: (model, prompt pairs, settings, LoRA file stem), or a ValueError."""
    single = dict(settings, model=model, clip=clip or [None])  # is_input_list: every input arrives as a list
    many = sorted(k for k, v in single.items() if len(v) != 1)
    if many:
        raise ValueError(f"{many} received several values (list inputs); NASA-T Train takes one value for each")
    s = {k: v[0] for k, v in single.items()}
    model, clip = s.pop("model"), s.pop("clip")
    check_settings(s)
    stem = lora_file_stem(s["lora_name"])
    width = unet_width(model)
    text_pairs = encode_prompt_pairs("\n".join(p for p in prompt_pairs or [] if p), clip)
    flat = lambda conds: [e for c in (conds or []) if c is not None for e in c]  # noqa: E731
    pairs = read_pairs(flat(positive), flat(negative), text_pairs, width, model_name(model))
    if s["batch_size"] > len(pairs):
        raise ValueError(f"batch_size is {s['batch_size']} but there are {len(pairs)} prompt pairs: lower "
                         f"batch_size to at most {len(pairs)} or add pairs")
    return model, pairs, s, stem


def finish(cls, model, result, config, stem: str, checkpoint_dir: Path) -> io.NodeOutput:
    """Cancel re-raises the host's interrupt (the checkpoint stays); a non-finite loss keeps the last good LoRA
    and fails the node with the fix; a finished run returns the three outputs."""
    if result.status == "interrupted":
        log.warning("NASA-T Train: cancelled after step %d; checkpoint %s (run again with resume to continue)",
                    result.steps_done, result.checkpoint)
        comfy.model_management.throw_exception_if_processing_interrupted()
        raise comfy.model_management.InterruptProcessingException()
    meta = {"nasa_t_config": json.dumps(config.as_dict()), "nasa_t_steps": result.steps_done}
    file_name = save_lora(result.student_lora, stem, meta)
    if result.status == "nan":
        raise RuntimeError(f"NASA-T Train: the loss became NaN/inf at step {result.steps_done + 1}; kept the last "
                           f"good student LoRA (step {result.steps_done}) as loras/{file_name}. Lower lr_student / "
                           f"lr_teacher or use fp32, then train again with resume off (checkpoints: {checkpoint_dir})")
    if result.status != "done":
        raise RuntimeError(f"NASA-T Train: unexpected trainer status {result.status!r}")
    student = comfy.sd.load_lora_for_models(model, None, result.student_lora, 1.0, 0)[0]
    image = loss_curve(result.losses)
    return io.NodeOutput(student, file_name, image, ui=ui.PreviewImage(image, cls=cls))
