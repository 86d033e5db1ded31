"""NASA-T from the command line: distil a one-step LoRA student that uses negatives, on one process or many.

    python scripts/nasa_train.py --ckpt model.safetensors --pairs pairs.txt --out student.safetensors
    torchrun --nproc_per_node 4 scripts/nasa_train.py --ckpt model.safetensors --pairs pairs.txt --out ...

``pairs.txt`` holds ``positive || negative`` per line (``#`` comments and blank lines skipped). The checkpoint is
loaded with the host's own loader (``comfy.sd.load_checkpoint_guess_config``) and the pairs are encoded with its
CLIP, as the NASA-T Train node does. Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set) every process trains
the same LoRA sets, data parallel over the global batch (process r takes samples r, r + N, ...), with gradients
all-reduced by DistributedDataParallel (gloo on CPU, nccl on GPU); only rank 0 writes checkpoints and the LoRA.
The paper trained on 4 GPUs. Ctrl-C (or SIGTERM) stops all processes at the next step with a checkpoint;
running the same command again resumes from it.

ComfyUI is found from --comfyui, $COMFYUI_PATH, the ComfyUI whose custom_nodes/ holds this pack, or the pack's
.host/ComfyUI (scripts/host.sh installs one).
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "nasa_pack"
log = logging.getLogger("nasa_train")


def comfy_root(explicit: str | None = None) -> Path:
    if explicit or os.environ.get("COMFYUI_PATH"):
        return Path(explicit or os.environ["COMFYUI_PATH"]).resolve()
    if REPO.parent.name == "custom_nodes" and (REPO.parent.parent / "main.py").exists():
        return REPO.parent.parent
    return REPO / ".host" / "ComfyUI"


def enter_comfy(explicit: str | None = None, cpu: bool = True) -> None:
    """Put ComfyUI on sys.path and make the pack importable as ``nasa_pack`` (as ComfyUI imports a custom node
    folder as a package, so the pack's relative imports resolve). ``cpu`` must be decided before
    comfy.model_management is imported: it picks the device when imported."""
    root = comfy_root(explicit)
    if not (root / "main.py").exists():
        raise SystemExit(f"no ComfyUI at {root}: pass --comfyui PATH, set COMFYUI_PATH, or run scripts/host.sh")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)  # the package's folder only; its __init__ is ComfyUI's entry point
        package.__path__ = [str(REPO)]
        sys.modules[PACKAGE] = package
    import comfy.cli_args

    if cpu:
        comfy.cli_args.args.cpu = True


def pack(module: str):
    return importlib.import_module(f"{PACKAGE}.{module}")


def distributed_from_env(device: str) -> tuple[int, int, bool]:
    """(rank, world_size, cuda) from torchrun's variables; joins the process group when world_size > 1.
    Call before comfy.model_management is imported: on GPU each process selects its LOCAL_RANK device first."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else None
    if cuda:
        torch.cuda.set_device(local)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                                             device_id=local)
    return rank, world, cuda


def ddp(module: torch.nn.Module) -> torch.nn.Module:
    """A LoRA set's module in DistributedDataParallel: its forward runs a model call with the set active
    (nodes/train/lora.py LoraSet), so DDP all-reduces (averages) that call's gradients in backward."""
    return torch.nn.parallel.DistributedDataParallel(module)


class StopFlag:
    """Set by SIGINT / SIGTERM; the trainer checks it between steps (on every process) and checkpoints."""

    def __init__(self):
        self.stop = False

    def __call__(self) -> bool:
        return self.stop

    def install(self) -> None:
        def handler(signum, frame):
            log.warning("signal %d: stopping after this step with a checkpoint", signum)
            self.stop = True
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)


def train(patcher, pairs, config, checkpoint_dir: Path, out: Path | None, rank: int = 0, world_size: int = 1,
          resume: bool = True, interrupted=lambda: False):
    """Run the pack's Trainer on this process's share; rank 0 writes ``out`` (the last good student LoRA)."""
    Trainer = pack("nodes.train.loop").Trainer
    wrap = ddp if world_size > 1 else (lambda module: module)
    trainer = Trainer(patcher, pairs, config, checkpoint_dir, rank=rank, world_size=world_size, wrap=wrap)

    def on_step(step, losses):
        if rank == 0:
            log.info("step %d/%d  student %.6g  teacher %.6g", step, config.steps, losses["student"],
                     losses["teacher"])
    result = trainer.run(on_step=on_step, interrupted=interrupted, resume=resume)
    if rank == 0 and out is not None:
        import comfy.utils

        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"nasa_t_config": json.dumps(config.as_dict()), "nasa_t_steps": str(result.steps_done),
                "nasa_t_world_size": str(world_size)}
        comfy.utils.save_torch_file(result.student_lora, str(out), metadata=meta)
        log.info("%s after %d steps: student LoRA %s (load it with LoraLoaderModelOnly)", result.status,
                 result.steps_done, out)
    return result


def load_pairs(ckpt: Path, pairs_file: Path):
    """The checkpoint's model and the pairs encoded with its CLIP (CLIPTextEncode's way, via the NASA-T node)."""
    import comfy.sd

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False, output_clip=True)
    if clip is None:
        raise SystemExit(f"{ckpt} holds no text encoder: NASA-T needs the checkpoint's CLIP to encode the pairs")
    pairs = pack("nodes.train.node").encode_prompt_pairs(pairs_file.read_text(encoding="utf-8"), clip)
    if not pairs:
        raise SystemExit(f"{pairs_file} has no 'positive || negative' lines")
    return model, pairs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="SD1.x / SD2.x / SDXL checkpoint with its CLIP")
    p.add_argument("--pairs", type=Path, required=True, help="text file, 'positive || negative' per line")
    p.add_argument("--out", type=Path, required=True, help="student LoRA file to write (.safetensors)")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="default: <out without suffix>_checkpoints")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if checkpoint-dir has one")
    p.add_argument("--comfyui", default=None, help="ComfyUI folder (default: see the module help)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1, help="global batch, split over the processes")
    p.add_argument("--lr-student", type=float, default=1e-5)
    p.add_argument("--lr-teacher", type=float, default=1e-3)
    p.add_argument("--rank", type=int, default=64, help="LoRA rank (paper 64)")
    p.add_argument("--lora-alpha", type=float, default=128.0, help="LoRA alpha; scale = alpha / rank (paper 128)")
    p.add_argument("--kappa", type=float, nargs=2, default=(0.5, 4.0), help="teacher CFG scale range")
    p.add_argument("--alpha", type=float, nargs=2, default=(0.0, 1.0), help="student NASA scale range")
    p.add_argument("--t-range", type=int, nargs=2, default=(20, 980), help="teacher timesteps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--targets", choices=("attention", "attention+ff"), default="attention")
    p.add_argument("--latent-size", type=int, default=0, help="latent side (0: 64 for SD1.x/2.x, 128 for SDXL)")
    return p.parse_args(argv)


def config_from_args(args):
    config = pack("nodes.train.config").TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr_student=args.lr_student, lr_teacher=args.lr_teacher,
        rank=args.rank, lora_alpha=args.lora_alpha, kappa=tuple(args.kappa), alpha=tuple(args.alpha),
        t_range=tuple(args.t_range), seed=args.seed, checkpoint_every=args.checkpoint_every,
        gradient_checkpointing=args.gradient_checkpointing, precision=args.precision, targets=args.targets,
        latent_size=args.latent_size)
    config.validate()
    return config


def main(argv=None) -> int:
    args = parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    enter_comfy(args.comfyui, cpu=not cuda)
    rank, world, _ = distributed_from_env("cuda" if cuda else "cpu")
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[nasa_train {rank}/{world}] %(message)s")
    try:
        config = config_from_args(args)  # bad settings fail before the model is loaded
        model, pairs = load_pairs(args.ckpt, args.pairs)
        checkpoint_dir = args.checkpoint_dir or args.out.with_name(args.out.stem + "_checkpoints")
        stop = StopFlag()
        stop.install()
        result = train(model, pairs, config, checkpoint_dir, args.out, rank, world, not args.no_resume, stop)
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if result.status == "nan":
        log.error("the loss became NaN/inf at step %d: kept the last good LoRA; lower the learning rates or use "
                  "fp32, then train again with --no-resume", result.steps_done + 1)
    return 0 if result.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
