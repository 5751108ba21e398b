"""Embedding models (DNABERT-S, ESM-2), their batching, and the embedding file format."""
