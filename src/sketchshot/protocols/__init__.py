"""Evaluation protocols, all on embeddings computed once: N-way K-shot episodes (saved and
replayed), kNN and linear-probe read-outs of the encoder, and Omniglot's one-shot runs."""
