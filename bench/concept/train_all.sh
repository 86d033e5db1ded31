#!/usr/bin/env bash
# Rebuild every committed weight file of the concept model, in the order and with the thread counts they were
# made with (CPU results depend on the thread count; with these, a rerun gives the same bytes).
#   bash bench/concept/train_all.sh            # ~1.5 h on 2 cores
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash scripts/host.sh
py=".host/venv/bin/python"
export OMP_WAIT_POLICY=PASSIVE
# VAE (ComfyUI's TAESD): from scratch, then the decoder alone, then both warm-started with crops on the extras
OMP_NUM_THREADS=1 $py bench/concept/vae.py --threads 1 --steps 400 --fg-weight 3
OMP_NUM_THREADS=1 $py bench/concept/vae.py --threads 1 --decoder-steps 1500 --fg-weight 3
OMP_NUM_THREADS=2 $py bench/concept/vae.py --threads 2 --init bench/concept/weights/concept_taesd.safetensors \
  --steps 500 --lr 1e-3 --fg-weight 6 --extra-crops
# the decoder alone once more (made beside the UNet's training: the encoder, so the latents, stay the same)
OMP_NUM_THREADS=1 $py bench/concept/vae.py --threads 1 --decoder-steps 1200 --fg-weight 6 --extra-crops
# the UNet on that VAE's latents (and the text rows)
OMP_NUM_THREADS=2 $py bench/concept/train.py --threads 2 --steps 1000 --batch 16 --pool 4096
# the decoder alone a third time, with the shapes' outlines weighted (made beside the students' training)
OMP_NUM_THREADS=1 $py bench/concept/vae.py --threads 1 --decoder-steps 1500 --fg-weight 6 --edge-weight 10 \
  --extra-crops --lr 1e-3
# the one-step students: NASA-T, and the alpha = 0 control
OMP_NUM_THREADS=1 $py bench/concept/students.py --which student --threads 1 --steps 600
# the control (alpha fixed at 0), trained the same way in a later session (14.5 min on 1 thread)
OMP_NUM_THREADS=1 $py bench/concept/students.py --which student_alpha0 --threads 1 --steps 600
