"""The SEED-2 image codec that loads MIO's official image tokenizer files."""
