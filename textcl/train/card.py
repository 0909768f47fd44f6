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
    if "metric" in m:  # an evaluator that names its metric (a recommendation stage: NDCG@10 x100)
        return m["metric"]
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
    best_line = (f"Best step on {selected_on}: {metrics['best_step']}." if metrics.get("best_step") is not None else
                 f"Not evaluated during training (no best step chosen); scored on {selected_on}.")
    notes = []
    if metrics.get("guard"):
        guard, tol = metrics["guard"], metrics.get("guard_tolerance")
        fell = [n for n, g in guard.items() if g.get("fell")]
        unmeasured = [n for n, g in guard.items() if g.get("before") is None]
        chose = []
        if config.eval.guard_select:
            chose.append("the best step")
        if (metrics.get("wise") or {}).get("requested") == "auto":
            chose.append("the WiSE-FT alpha")
        role = (f"they chose {' and '.join(chose)}, so their scores after are not held out" if chose else
                "they chose nothing: no step and no merge was selected on them")
        notes.append(f"Guard sets (off the training domain): {', '.join(guard)}; {role}. "
                     + (f"**{', '.join(fell)} fell more than {tol} points below the starting model.** " if fell else "")
                     + (f"{', '.join(unmeasured)}: no starting score (a run resumed from before the guard was "
                        f"added), so no change is known." if unmeasured else
                        "" if fell else f"None fell more than {tol} points below the starting model."))
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

{best_line}

{notes_text}
## Recipe

```yaml
{recipe}```

## Citation

```bibtex
{citation.strip()}
```
"""
