"""Evaluation: STS (Spearman with bootstrap CIs, paired tests) and retrieval (nDCG, MRR, Recall)."""
