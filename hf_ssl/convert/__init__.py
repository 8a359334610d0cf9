"""Conversions: original checkpoints -> hf_ssl, hf_ssl <-> plain transformers classes, local folders -> Hub cache."""
