"""The benchmark's table: columns, NASA targets, ratios and the markdown row layout."""

COLUMNS = {"unpatched": "unpatched (cfg 1)", "nasa": "NASA Apply (cfg 1)", "cfg": "CFG (cfg 5)",
           "nag": "NAGuidance (cfg 1)"}
TARGETS = {"flops_sd15": 1.02, "flops_sdxl": 1.02, "flops_flux": 1.10, "flops_sd35": 1.10, "flops_pixart": 1.03,
           "flops_wan": 1.03, "wall_clock": 1.10, "peak_memory": 1.05}


def finish(row: dict) -> dict:
    base = row["raw"]["unpatched"]
    row.setdefault("ratio", {k: v / base for k, v in row["raw"].items()})
    row["target"] = TARGETS[row["key"]]
    row["nasa_meets_target"] = row["ratio"]["nasa"] <= row["target"]
    return row


def number(x: float) -> str:
    return f"{x:,.2f}" if abs(x) >= 10 else f"{x:.4g}"


def markdown(rows: list, columns: dict, quick: bool) -> str:
    head = ["measure", "model"] + list(columns.values()) + ["NASA target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["measure"], row["model"]]
        cells += [f"{row['ratio'][k]:.4f} ({number(row['raw'][k])} {row['unit']})" for k in columns]
        met = "n/a (quick)" if quick else ("yes" if row["nasa_meets_target"] else "NO")
        cells += [f"<= {row['target']:.2f}", met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
