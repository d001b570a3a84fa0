"""The SpeechTokenizer codec that loads MIO's official speech tokenizer files."""
