"""Loading MIO-format models (official release folders and the embedded tiny model)."""
