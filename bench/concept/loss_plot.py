"""A NASA-T loss-curve picture with PIL only (the host venv has no matplotlib): one panel per loss, raw per-step
values in a light shade, a centred moving average in the full colour, axes with tick labels.

The node's own ``nodes/train/node.loss_curve`` draws both raw curves in one unlabelled box (fine as a node preview);
a figure for the README needs a smoothed trend and readable scales, so it is drawn here.
"""
from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

# The student's value grows with the step's CFG scale kappa (eps_teacher holds kappa (eps+ - eps-)) and does not
# have to fall as the student improves: VSD's LoRA teacher moves with it. Both are diagnostics, as in SwiftBrush.
PANELS = (("student", "student: VSD surrogate 0.5 ||w(t)(eps_teacher - eps_lora)||^2 / batch (grows with the "
                      "step's kappa)", (30, 90, 200)),
          ("teacher", "LoRA teacher: denoising loss ||eps_lora(x_t') - eps'||^2", (220, 110, 20)))


def smooth(values: list, window: int) -> list:
    """Centred moving average over ``window`` steps (shorter at both ends, so it has one value per step)."""
    half = max(window, 1) // 2
    out = []
    for i in range(len(values)):
        part = values[max(0, i - half):i + half + 1]
        out.append(sum(part) / len(part))
    return out


def _ticks(lo: float, hi: float, n: int = 4) -> list:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _panel(draw, box, steps, raw, smoothed, title, colour, window) -> None:
    left, top, right, bottom = box
    lo, hi = min(raw), max(raw)
    pad = 0.05 * ((hi - lo) or abs(hi) or 1.0)
    lo, hi = lo - pad, hi + pad
    first, last = steps[0], steps[-1]

    def xy(s, v):
        return (left + (right - left) * (s - first) / ((last - first) or 1),
                bottom - (bottom - top) * (v - lo) / (hi - lo))
    draw.rectangle(box, outline=(120, 120, 120))
    for v in _ticks(lo, hi):
        y = xy(first, v)[1]
        draw.line([(left - 4, y), (right, y)], fill=(225, 225, 225))
        draw.text((4, y - 6), f"{v:.3g}", fill="black")
    for s in _ticks(first, last, 6):
        x = xy(s, lo)[0]
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x - 8, bottom + 6), f"{s:g}", fill="black")
    light = tuple(int(c + 0.65 * (255 - c)) for c in colour)
    draw.line([xy(s, v) for s, v in zip(steps, raw)], fill=light, width=1)
    draw.line([xy(s, v) for s, v in zip(steps, smoothed)], fill=colour, width=3)
    draw.text((left, top - 28), title, fill=colour)
    draw.text((left, top - 15), f"raw per step (light); moving average over {window} steps (dark): "
                                f"{smoothed[0]:.4g} -> {smoothed[-1]:.4g}", fill="black")


def draw_losses(losses: list, path: Path, title: str, window: int = 25, size=(900, 640)) -> None:
    """Save the picture of ``losses`` (TrainResult.losses: dicts with step, student, teacher) to ``path``."""
    rows = [r for r in losses if all(math.isfinite(float(r[k])) for k, _, _ in PANELS)]
    if len(rows) < 2:
        raise ValueError(f"need at least two finite loss records to draw a curve, got {len(rows)} of {len(losses)}")
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 6), title, fill="black")
    steps = [float(r["step"]) for r in rows]
    panel_h = (h - 40) // len(PANELS)
    for i, (key, label, colour) in enumerate(PANELS):
        raw = [float(r[key]) for r in rows]
        top = 40 + i * panel_h + 34
        _panel(draw, (60, top, w - 20, top + panel_h - 60), steps, raw, smooth(raw, window), label, colour,
               window)
    draw.text((w // 2 - 20, h - 14), "training step", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
