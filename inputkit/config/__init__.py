"""Configuration: schemas (ConfigStore), composition with Hydra, and checking into a RunSpec."""
