"""`gan-pipeline compare`: the pipeline once per preset on the same data and budget, then one table,
one sample row per preset and a time-to-quality plot (FID / floor against training seconds)."""

import json
from pathlib import Path

import numpy as np
from prefect import flow

from gan import checkpoint as ckpt, sampling
from gan.images import save_labelled_rows, save_time_to_quality
from pipelines.config import PipelineConfig, fingerprint
from pipelines.flow import gan_pipeline
from pipelines.workspace import Workspace


def result_row(name: str, cfg: PipelineConfig, summary: dict) -> dict:
    """One preset's scores (and their ratio to the real-vs-real floor), training time and throughput."""
    report = json.loads(Path(summary["report"]).read_text())
    model, floor = report["model"], report["real_vs_real"]
    images = report["step"] * cfg.train.batch_size * cfg.ray.num_workers
    return {
        "preset": name, "fid": model["fid"], "fid_over_floor": model["fid"] / floor["fid"], "floor_fid": floor["fid"],
        "fid_mean": report["fid_draws"]["mean"], "fid_std": report["fid_draws"]["std"], "fid_draws": len(report["fid_draws"]["values"]),
        "is": model["inception_score"], "is_over_floor": model["inception_score"] / floor["inception_score"],
        "classes": model["classes_covered"], "class_kl": model["class_kl"], "steps": report["step"], "epochs": report["epoch"],
        "train_seconds": report["train_seconds"], "images_per_sec": images / max(report["train_seconds"], 1e-9),
        "label_accuracy_min": report.get("conditional", {}).get("min_accuracy"),
        "code_agreement": report.get("infogan", {}).get("code_class_agreement"),
        "model": f"{summary['registered']['model_name']} v{summary['registered']['version']}" if "version" in summary["registered"]
        else "not registered (collapsed)",  # refused by the watchdog or by the evaluation's collapse gate
        "quick_fid": [{**q, "fid_over_floor": q["fid"] / floor["fid"]} for q in report["quick_fid"]],
        "checkpoint": summary["train"]["checkpoint"], "report": summary["report"],
    }


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| preset | FID | FID ÷ floor | FID over draws | IS (÷ floor) | classes | class KL | label acc. (min) | code agreement | epochs | train s | img/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        extra = [f"{r[k]:.3f}" if r[k] is not None else "–" for k in ("label_accuracy_min", "code_agreement")]
        lines.append(
            f"| {r['preset']} | {r['fid']:.2f} | {r['fid_over_floor']:.1f}× | {r['fid_mean']:.2f} ± {r['fid_std']:.2f} | "
            f"{r['is']:.2f} ({r['is_over_floor']:.0%}) | {r['classes']} | "
            f"{r['class_kl']:.3f} | {extra[0]} | {extra[1]} | {r['epochs']} | {r['train_seconds']:.0f} | {r['images_per_sec']:.0f} |"
        )
    lines.append(
        f"\nReal-vs-real floor: FID {rows[0]['floor_fid']:.2f} (held-out real images against the training images). "
        f"FID over draws: mean ± std over {rows[0]['fid_draws']} draws of latents, the first being the FID column's."
    )
    return "\n".join(lines) + "\n"


def sample_row(checkpoint_dir: str, seed: int, count: int = 10) -> np.ndarray:
    """`count` samples of a checkpoint's EMA generator; one per class (or categorical code) where the model has them."""
    G, _, latent = ckpt.ema_generator(ckpt.load(Path(checkpoint_dir)))
    if latent.num_classes or latent.info_categorical:
        inputs = sampling.per_class_inputs(latent, 1, seed)
    else:
        inputs = sampling.random_inputs(latent, count, seed)
    return inputs.generate(G, latent)[:count].numpy()


def write_comparison(configs: dict[str, PipelineConfig], summaries: dict[str, dict]) -> dict:
    rows = [result_row(name, configs[name], summaries[name]) for name in configs]
    first = next(iter(configs.values()))
    out = Workspace.of(first.runtime.workdir).root / "comparisons" / fingerprint(sorted((r["preset"], r["report"]) for r in rows))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    (out / "table.md").write_text(markdown_table(rows))
    save_labelled_rows({r["preset"]: sample_row(r["checkpoint"], first.eval.seed) for r in rows}, out / "samples.png")
    save_time_to_quality({r["preset"]: r["quick_fid"] for r in rows}, out / "time_to_quality.png")
    print(f"[compare] wrote {out}")
    return {"table": str(out / "table.md"), "rows": rows}


@flow(name="gan-compare", log_prints=True)
def compare_presets(configs: dict[str, dict]) -> dict:
    """Each preset's pipeline as a subflow (cached and retried stage by stage as usual), then the comparison."""
    summaries = {name: gan_pipeline(config) for name, config in configs.items()}
    return write_comparison({name: PipelineConfig.model_validate(c) for name, c in configs.items()}, summaries)
