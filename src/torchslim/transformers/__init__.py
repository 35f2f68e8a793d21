"""Compression for Hugging Face encoders (all-MiniLM-L6-v2 and any BERT-like model on disk)."""
