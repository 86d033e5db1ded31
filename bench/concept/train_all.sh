#!/usr/bin/env bash
# Rebuild every committed weight file of the concept model, in the order and with the thread counts they were
# made with (CPU results depend on the thread count; with these, a rerun gives the same bytes).
#   bash bench/concept/train_all.sh            # ~1.5 h on 2 cores
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash scripts/host.sh
py=".host/venv/bin/python"
export OMP_WAIT_POLICY=PASSIVE
# VAE (ComfyUI's TAESD) from scratch: encoder + decoder (12.5 min)
OMP_NUM_THREADS=2 $py bench/concept/vae.py --threads 2 --steps 900 --batch 16 --fg-weight 6 --edge-weight 10
# the UNet on that encoder's latents (and the text rows; ~47 min)
OMP_NUM_THREADS=2 $py bench/concept/train.py --threads 2 --steps 4000 --batch 32 --pool 4096
# the decoder alone (made beside the UNet's training: the encoder, so the latents, stay the same; 8 min)
OMP_NUM_THREADS=1 $py bench/concept/vae.py --threads 1 --decoder-steps 600 --batch 16 --lr 1e-3 --fg-weight 6 \
  --edge-weight 10
# the one-step students: NASA-T, and the alpha = 0 control (trained side by side, one thread each)
OMP_NUM_THREADS=1 $py bench/concept/students.py --which student --threads 1 --steps 5000 &
OMP_NUM_THREADS=1 $py bench/concept/students.py --which student_alpha0 --threads 1 --steps 5000
wait
