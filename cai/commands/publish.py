"""`cai publish`: the exact folder that goes to the Hub (train/test parquet per config, constitution,
dataset card), and the bounded-retry upload."""

from __future__ import annotations

import shutil
from pathlib import Path

from cai.backends.retries import transient
from cai.core.sampling import stable_unit
from cai.core.store import RunStore
from cai.errors import CaiError


def _is_test(prompt_id: str, seed: int, fraction: float) -> bool:
    """Split by prompt: the same prompt id lands on the same side in every config."""
    return stable_unit("split", seed, prompt_id) < fraction


def build(
    run: str,
    folder: str,
    repo: str = "OWNER/NAME",
    test_fraction: float = 0.05,
    seed: int = 0,
    license: str | None = None,
    min_p_true: float | None = None,
) -> dict:
    """Write the Hub folder for `run` into `folder`; returns what was written. `min_p_true` keeps only the
    SFT rows whose completion the model itself rated at least that likely true (runs made with --self-eval)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from cai.commands import stats
    from cai.core import constitution as constitution_mod

    store = RunStore(run)
    manifest = store.require()
    if not 0 <= test_fraction < 1:
        raise CaiError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    out = Path(folder)
    if out.exists() and any(out.iterdir()):
        raise CaiError(f"--dry-run {out}: folder exists and is not empty")
    if min_p_true is not None and not 0 <= min_p_true <= 1:
        raise CaiError(f"--min-p-true must be in [0, 1], got {min_p_true}")
    from cai.core import decisions

    run_stages = stats.run_stages(store)
    counts, notes = {}, []
    reviews = store.reviews()
    reviewed = {"dropped": 0, "flipped": 0, "relabelled": 0, "kept": 0}
    for stage in run_stages:
        table = store.table(stage.split)
        if table is None:
            continue
        if min_p_true is not None:
            table, note = stage.report().select(table, min_p_true)
            notes += [note] if note else []
        table, done = decisions.apply(table, stage.split, stage.view, reviews)
        reviewed = {k: reviewed[k] + v for k, v in done.items()}
        test_mask = pa.array(
            [_is_test(i, seed, test_fraction) for i in table.column(stage.key).to_pylist()], type=pa.bool_()
        )  # typed: a split filtered down to no rows still splits
        for name, mask in (("train", pc.invert(test_mask)), ("test", test_mask)):
            part = table.filter(mask)
            (out / stage.split).mkdir(parents=True, exist_ok=True)
            pq.write_table(part, out / stage.split / f"{name}-00000-of-00001.parquet")
            counts[f"{stage.split}/{name}"] = part.num_rows
    if not counts:
        raise CaiError(f"{run}: the run has no rows yet")
    const_path = store.constitution_path()
    const = None
    if const_path is not None and const_path.is_file():
        shutil.copy(const_path, out / f"constitution-{const_path.name}")
        const = constitution_mod.load(const_path)
    summary = stats.compute(run)
    if min_p_true is not None and not notes:
        raise CaiError(f"--min-p-true: {run} has no P(True) to select by (generate with --self-eval)")
    if any(reviewed.values()):
        notes.append(
            f"A person reviewed {sum(reviewed.values())} rows before publishing (`cai review`): kept "
            f"{reviewed['kept']}, dropped {reviewed['dropped']}, flipped {reviewed['flipped']} preference pairs "
            f"(their `p_chosen` is the person's 1.0, the judge's in `ai_p_chosen`), relabelled steps in "
            f"{reviewed['relabelled']}. `human_label` says which rows a person looked at."
        )
    (out / "README.md").write_text(card(repo, manifest, const, counts, summary, license, run_stages, notes))
    return {"folder": str(out), "counts": counts, "reviewed": reviewed}


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def card(repo, manifest, const, counts, summary, license, run_stages, notes=()) -> str:
    import yaml

    reports = {stage.name: stage.report() for stage in run_stages}
    configs = []
    for split in (stage.split for stage in run_stages):
        if f"{split}/train" in counts:
            configs.append(
                {
                    "config_name": split,
                    "data_files": [
                        {"split": name, "path": f"{split}/{name}-*.parquet"}
                        for name in ("train", "test")
                        if counts.get(f"{split}/{name}")
                    ],
                }
            )
    total = sum(counts.values())
    header = {
        "configs": configs,
        "license": license or (const.license if const and const.license else "cc-by-4.0"),
        "task_categories": list(
            dict.fromkeys(
                t
                for stage in run_stages
                if f"{stage.split}/train" in counts
                for t in reports[stage.name].task_categories
            )
        ),
        "language": ["en"],
        "size_categories": [_size_category(total)],
        "tags": ["constitutional-ai", "rlaif", "synthetic", "cai"],
        "pretty_name": f"{const.name if const else 'cai'} constitutional AI data",
    }
    cfg = manifest.get("config", {})
    c = manifest.get("constitution", {})
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# {repo}",
        "",
        "Synthetic alignment data generated with [cai](https://pypi.org/project/cai/) from a written "
        "constitution, following Constitutional AI (Bai et al. 2022):",
        "",
    ]
    written = [stage for stage in run_stages if stage.name in summary["sections"]]
    for stage in written:
        lines += reports[stage.name].card_lines(summary)
    lines += ["", "## Rows", "", *notes, *([""] if notes else []), "| config | split | rows |", "| --- | --- | --- |"]
    lines += [f"| {k.split('/')[0]} | {k.split('/')[1]} | {v} |" for k, v in counts.items()]
    lines += [
        "",
        "## Generation",
        "",
        f"- model: `{manifest.get('model')}`, seed {manifest.get('seed')}",
        f"- constitution: `{c.get('name')}` (sha256 `{str(c.get('sha256'))[:16]}`)",
        f"- sampling: temperature {cfg.get('temperature')}, top_p {cfg.get('top_p')}, "
        f"max_tokens {cfg.get('max_tokens')}",
    ]
    if const:
        lines += [
            "",
            "## Constitution",
            "",
            "| id | critique request | comparison question | rules |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {p.id} | {_cell(p.critique or '')} | {_cell(p.compare or '')} | "
            f"{_cell('; '.join(r.describe() for r in p.rules))} |"
            for p in const.principles
        ]
    statistics = [line for stage in written for line in reports[stage.name].card_stats(summary)]
    if statistics:
        lines += ["", "## Label statistics", "", *statistics]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        *(f'{s.split} = load_dataset("{repo}", "{s.split}")  # {reports[s.name].readers}' for s in written),
        "```",
        "",
        *(line for stage in written for line in reports[stage.name].card_use()),
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def upload(folder: str, repo: str, private: bool = False, attempts: int = 5, max_wait: float = 30.0) -> str:
    """Create the dataset repo (if needed) and upload `folder`, retrying transient failures with
    exponential backoff and jitter; gives up after `attempts` tries."""
    from huggingface_hub import HfApi, get_token
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

    token = get_token()
    if not token:
        raise CaiError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run DIR)")
    api = HfApi(token=token)

    @retry(
        retry=retry_if_exception(transient),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.5, max=max_wait),
        reraise=True,
    )
    def push():
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=folder,
            repo_id=repo,
            repo_type="dataset",
            commit_message="Upload constitutional AI data generated with cai",
        )

    try:
        push()
    except Exception as e:
        raise CaiError(
            f"upload to {repo} failed after {attempts} attempt(s): {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    return f"https://huggingface.co/datasets/{repo}"
