"""NASA (Negative-Away Steer Attention, arXiv 2412.02687) as pure torch functions: no ComfyUI import here."""
from .attention import (mean_negative, nasa_attention, negative_attention, scaled_dot_product_attention,
                        steer)
from .rows import positive_rows
from .vsd import (alpha_bar, eps_from_denoised, lora_teacher_loss, sample_seed, teacher_cfg, timestep_weight, uniform,
                  vsd_gradient, vsd_loss)

__all__ = ["nasa_attention", "negative_attention", "steer", "mean_negative", "scaled_dot_product_attention",
           "positive_rows", "alpha_bar", "timestep_weight", "eps_from_denoised", "teacher_cfg", "vsd_gradient",
           "vsd_loss", "lora_teacher_loss", "uniform", "sample_seed"]
