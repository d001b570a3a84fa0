"""Speech and image codecs: MIO's modalities to codes and back."""
