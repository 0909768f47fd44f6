"""What a finished run says about itself: the headline number of an evaluation, its label, and the model card."""
from __future__ import annotations

import yaml

from textcl.config import TrainConfig


def metric_value(m: dict) -> float:
    """The headline number of one evaluation: an STS set's Spearman x100, or an evaluator's score."""
    return m["spearman"] if "spearman" in m else m["score"]


def metric_label(name: str, m: dict) -> str:
    """What :func:`metric_value` of ``m`` measures, for tables and plots."""
    if m.get("guard"):
        return f"{m.get('metric', 'score')}, guard"
    if "spearman" in m:
        return "Spearman x100 (cosine)"
    if name.lower().endswith("ndcg@10"):
        return "nDCG@10 x100"
    return "score"


def _length_note(lengths: dict) -> str:
    auto = lengths.get("auto")
    if not auto:
        return ""
    return (f", chosen on the selection sets after training (`model.save_max_seq_len: auto`): "
            f"{auto['train']['score']:.2f} at {auto['train']['length']} tokens, "
            f"{auto['base']['score']:.2f} at {auto['base']['length']}")


def model_card(config: TrainConfig, metrics: dict, citation: str) -> str:
    """The README.md of a trained model folder: usage, lengths, the before/after table, the recipe."""
    rows = []
    for name, m in metrics.get("after", {}).items():
        before = metrics.get("before", {}).get(name)
        ci = m.get("ci95")
        ci_text = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        before_text = f"{metric_value(before):.2f}" if before else "–"
        rows.append(f"| {name} | {metric_label(name, m)} | {before_text} | {metric_value(m):.2f}{ci_text} |")
    table = ("\n".join(["| evaluation | metric | before | after (95% CI) |", "|---|---|---|---|", *rows])
             if rows else "(no evaluation)")
    lengths = metrics.get("max_seq_len", {})
    dims = config.loss.matryoshka.dims if config.loss.matryoshka is not None else None
    matryoshka = (f"\nTrained with a Matryoshka loss at dimensions {dims}: the first d dimensions, renormalised, "
                  f"are an embedding of their own (`SentenceTransformer(path, truncate_dim=d)`, textcl's "
                  f"`Encoder.encode(texts, dim=d)`, `textcl index build --dim d`). Rows named `<set>@<d>d` score "
                  f"them.\n" if dims else "")
    selected_on = ", ".join(metrics.get("selected_on") or []) or "n/a"
    notes = []
    if metrics.get("guard"):
        fell = [n for n, g in metrics["guard"].items() if g.get("fell")]
        notes.append(f"Guard sets (off the training domain, never selected on unless `eval.guard_select`): "
                     f"{', '.join(metrics['guard'])}. "
                     + (f"**{', '.join(fell)} fell more than {metrics.get('guard_tolerance')} points below the "
                        f"starting model.**" if fell else
                        f"None fell more than {metrics.get('guard_tolerance')} points below the starting model."))
    wise = metrics.get("wise")
    if wise:
        notes.append(f"Weights: WiSE-FT, {1 - wise['alpha']:.2f} x `{config.model.name}` + {wise['alpha']:.2f} x "
                     f"the trained weights (`train.wise_alpha: {wise['requested']}`"
                     + (", chosen on the selection and guard sets)." if wise["requested"] == "auto" else ")."))
    notes_text = "\n\n".join(notes) + ("\n" if notes else "")
    recipe = yaml.safe_dump(config.to_dict(), sort_keys=False)
    return f"""---
library_name: sentence-transformers
base_model: {config.model.name}
tags:
- sentence-transformers
- textcl
- contrastive-learning
---

# {config.name}

A sentence embedding model fine-tuned with textcl from `{config.model.name}` on `{config.data.path}`
({config.data.kind}, {metrics.get('examples', '?')} examples, {metrics.get('steps', '?')} steps).

## Usage

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("path/to/this/folder")
embeddings = model.encode(["A sentence to embed."])
```

Training inputs were truncated to {lengths.get('train', config.model.max_seq_len)} tokens; this model encodes up to
{lengths.get('saved', '?')} tokens{_length_note(lengths)}.

## Results

Evaluated in {metrics.get('eval_precision', 'fp32')}, at this model's maximum length.
{matryoshka}
{table}

Best step on {selected_on}: {metrics.get('best_step')}.

{notes_text}
## Recipe

```yaml
{recipe}```

## Citation

```bibtex
{citation.strip()}
```
"""
