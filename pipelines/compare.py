"""`gan-pipeline compare`: the pipeline once per preset on the same data and budget, then one table,
one sample row per preset and a time-to-quality plot (FID / floor against training seconds)."""

import json
from pathlib import Path

import numpy as np
from prefect import flow

from gan import checkpoint as ckpt, files, sampling
from gan.images import save_labelled_rows, save_time_to_quality
from gan.metrics.evaluation import figure
from pipelines.config import PipelineConfig, fingerprint
from pipelines.flow import gan_pipeline
from pipelines.workspace import Workspace


def quality_curve(report: dict) -> list[dict]:
    """The report's quick FIDs in order, each with its ratio to the report's real-vs-real floor (`fid_over_floor`)."""
    floor = report["real_vs_real"]["fid"]
    return [{**q, "fid_over_floor": q["fid"] / floor} for q in report["quick_fid"]]


def first_within(curve: list[dict], k: float) -> dict | None:
    """The first quick FID of a `quality_curve` at or under k x the floor (its 'seconds' of training, its 'step'), or None
    when the run never got there."""
    return next((q for q in curve if q["fid_over_floor"] <= k), None)


def result_row(name: str, cfg: PipelineConfig, summary: dict) -> dict:
    """One preset's scores (the report's list of metrics, and its FID's ratio to the real-vs-real floor), training time
    and throughput."""
    report = json.loads(Path(summary["report"]).read_text())
    model, floor = report["model"], report["real_vs_real"]
    images = report["step"] * cfg.worker_batch * cfg.ray.num_workers
    return {
        "preset": name, "metrics": report["metrics"], "fid": model["fid"], "floor_fid": floor["fid"], "fid_over_floor": model["fid"] / floor["fid"],
        "steps": report["step"], "epochs": report["epoch"],
        "train_seconds": report["train_seconds"], "images_per_sec": images / max(report["train_seconds"], 1e-9),
        "model": f"{summary['registered']['model_name']} v{summary['registered']['version']}" if "version" in summary["registered"]
        else "not registered (collapsed)",  # refused by the watchdog or by the evaluation's collapse gate
        "quick_fid": quality_curve(report),
        "checkpoint": summary["train"]["checkpoint"], "report": summary["report"],
    }


def markdown_table(rows: list[dict]) -> str:
    """One column per number the reports list (in their order; '–' where a preset's report lacks it, such as label
    accuracy for an unconditional model), then the training time; the floors below."""
    labels = list(dict.fromkeys(line["label"] for r in rows for line in r["metrics"]))
    lines = [f"| preset | FID ÷ floor | {' | '.join(labels)} | epochs | train s | img/s |", "|---|" + "---:|" * (len(labels) + 4)]
    for r in rows:
        by_label = {line["label"]: line for line in r["metrics"]}
        cells = [figure(by_label[label]["value"], by_label[label]["std"], by_label[label]["format"]) if label in by_label else "–"
                 for label in labels]
        lines.append(f"| {r['preset']} | {r['fid_over_floor']:.1f}× | {' | '.join(cells)} | {r['epochs']} | {r['train_seconds']:.0f} | "
                     f"{r['images_per_sec']:.0f} |")
    floors = "; ".join(f"{line['label']} {figure(line['floor'], line['floor_std'], line['format'])}"
                       for line in rows[0]["metrics"] if line["floor"] is not None)
    lines.append(f"\nReal-vs-real floor (held-out real images against the training images, as many as the samples): {floors}.")
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
    files.write_json(out / "results.json", rows)
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
