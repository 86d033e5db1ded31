"""NASA (Negative-Away Steer Attention, arXiv 2412.02687) as pure torch functions: no ComfyUI import here."""
from .attention import (mean_negative, nasa_attention, negative_attention, scaled_dot_product_attention,
                        steer)
from .rows import positive_rows

__all__ = ["nasa_attention", "negative_attention", "steer", "mean_negative", "scaled_dot_product_attention",
           "positive_rows"]
