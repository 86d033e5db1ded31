"""scripts/nasa_train.py's data-parallel path: two gloo processes on the CPU (torchrun's environment variables,
DistributedDataParallel around each LoRA set) give the same LoRA sets after two steps as one process over the
same global batch, on a tiny SD1.5 model built from ComfyUI's classes.

The base runs in float64 (the LoRA sets and losses stay float32): at init the VSD gradient is a small difference
of two nearly equal teacher predictions, and with a float32 base the batch-of-2 and batch-of-1 convolutions round
differently enough to flip the sign of a few near-zero gradient elements, which AdamW's sign-like first steps turn
into lr-sized weight differences. A float64 base keeps the comparison at the LoRA's own float32 rounding."""
import importlib.util
import multiprocessing
import os
import socket
import traceback
from pathlib import Path

import pytest
import torch

import host
import tiny

STEPS, BATCH, RANK, ALPHA, LR = 2, 2, 4, 8.0, 1e-3


def cli():
    spec = importlib.util.spec_from_file_location("nasa_train_cli", host.REPO / "scripts" / "nasa_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pairs():
    """Two (positive, negative) pairs with different token counts, as the host's CLIP encoder makes them."""
    return [(tiny.text("sd15", tokens=7, seed=10 + i)[0], tiny.text("sd15", tokens=5, seed=20 + i)[0])
            for i in range(2)]


def config():
    from nasa_pack.nodes.train.config import TrainConfig

    return TrainConfig(steps=STEPS, batch_size=BATCH, lr_student=LR, lr_teacher=LR, rank=RANK, lora_alpha=ALPHA,
                       seed=0, checkpoint_every=1, latent_size=8)


def worker(rank: int, world: int, port: int, out: str) -> None:
    """One training process as torchrun starts it: the environment says who it is."""
    try:
        torch.set_num_threads(1)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank))
        host.enter_host()
        train = cli()
        train.enter_comfy(cpu=True)
        got_rank, got_world, cuda = train.distributed_from_env("cpu")
        assert (got_rank, got_world, cuda) == (rank, world, False)
        try:
            result = train.train(tiny.tiny_model("sd15", seed=0, dtype=torch.float64), pairs(), config(), Path(out) / "checkpoints",
                                 Path(out) / "student.safetensors", rank, world, resume=False)
            assert result.status == "done" and result.steps_done == STEPS, result
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    except BaseException:
        Path(out, f"error_{rank}.txt").write_text(traceback.format_exc())
        raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_gradients(out: Path) -> dict:
    """Each set's step-1 gradient (all-reduced under DDP), read from AdamW's first moment: exp_avg = (1 - beta1) g
    after one step from zero."""
    from nasa_pack.nodes.train import checkpoint as train_checkpoint

    state = train_checkpoint.load(train_checkpoint.checkpoint_path(out / "checkpoints", 1))
    return {(name, i): s["exp_avg"] / 0.1 for name, opt in state["optimizer"].items()
            for i, s in opt["state"].items()}


def sets_after(out: Path) -> dict:
    """Both LoRA sets of the final checkpoint, and the student file the CLI wrote (rank 0 only)."""
    import comfy.utils

    from nasa_pack.nodes.train import checkpoint as train_checkpoint

    state = train_checkpoint.load(train_checkpoint.checkpoint_path(out / "checkpoints", STEPS))
    student_file = comfy.utils.load_torch_file(str(out / "student.safetensors"))
    assert student_file.keys() == state["lora"]["student"].keys()
    assert all(torch.equal(student_file[k], v) for k, v in state["lora"]["student"].items())
    return {f"{name}/{k}": v for name, sd in state["lora"].items() for k, v in sd.items()}


def test_two_gloo_processes_match_one_process(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, 2, port, str(two))) for r in range(2)]
    for p in procs:
        p.start()
    # the one-process reference runs here meanwhile (this process has ComfyUI imported already)
    result = cli().train(tiny.tiny_model("sd15", seed=0, dtype=torch.float64), pairs(), config(),
                         one / "checkpoints", one / "student.safetensors", resume=False)
    assert result.status == "done" and result.steps_done == STEPS
    for p in procs:
        p.join(timeout=300)
    errors = [f.read_text() for f in two.glob("error_*.txt")]
    assert not errors, "\n".join(errors)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list((two / "checkpoints").glob("step_*.pt"))) == STEPS  # rank 0 wrote each checkpoint once

    g_one, g_two = first_gradients(one), first_gradients(two)
    assert g_one.keys() == g_two.keys() and len(g_one) > 0
    g_max = max(g.abs().max().item() for g in g_one.values())
    g_diff = max((g_one[k] - g_two[k]).abs().max().item() for k in g_one)
    assert g_max > 0 and g_diff <= 1e-5 * g_max, (g_diff, g_max)

    from nasa_pack.nodes.train.lora import LoraSets

    single, ddp = sets_after(one), sets_after(two)
    fresh = LoraSets(tiny.tiny_model("sd15", seed=0, dtype=torch.float64).model.diffusion_model, RANK, ALPHA, seed=0)
    start = {f"{name}/{k}": v for name in ("student", "teacher") for k, v in fresh.state_dict(name).items()}
    assert single.keys() == ddp.keys() == start.keys()
    update = {k: single[k] - start[k] for k in single if not k.endswith(".alpha")}
    update_norm = torch.sqrt(sum(u.double().square().sum() for u in update.values())).item()
    update_max = max(u.abs().max().item() for u in update.values())
    diff = max((single[k] - ddp[k]).abs().max().item() for k in update)
    print(f"\n[ddp] step-1 gradient: max |g_1proc - g_2proc| {g_diff:.3e} of max |g| {g_max:.3e}; after {STEPS} "
          f"steps: max |W_1proc - W_2proc| {diff:.3e}, update norm {update_norm:.3e}, max |update| {update_max:.3e} "
          f"(AdamW lr {LR}, global batch {BATCH})")
    # Both sets moved by about lr per element per step (AdamW), and the two runs agree to float rounding.
    assert update_max > 0.5 * LR
    for name in ("student", "teacher"):
        assert any(u.abs().max() > 0.5 * LR for k, u in update.items() if k.startswith(name))
    assert diff <= 1e-3 * update_max, (diff, update_max)


def test_cli_refuses_bad_settings_before_loading(tmp_path, monkeypatch):
    train = cli()
    base = ["--ckpt", str(tmp_path / "missing.safetensors"), "--pairs", str(tmp_path / "p.txt"), "--out",
            str(tmp_path / "s.safetensors")]
    args = train.parse_args(base + ["--steps", "3", "--kappa", "1", "2", "--latent-size", "8"])
    config = train.config_from_args(args)
    assert (config.steps, config.kappa, config.latent_size, config.lora_alpha) == (3, (1.0, 2.0), 8, 128.0)
    for bad, match in ((["--rank", "0"], "rank"), (["--lr-teacher", "-1"], "lr_teacher"),
                       (["--kappa", "4", "1"], "kappa")):
        with pytest.raises(ValueError, match=match):
            train.config_from_args(train.parse_args(base + bad))
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    assert train.comfy_root() == tmp_path.resolve()
    assert train.comfy_root(str(host.comfy_root())) == host.comfy_root()
