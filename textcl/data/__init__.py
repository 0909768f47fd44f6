"""Data: STS sets, packaged text corpora, BEIR folders, training pairs."""
