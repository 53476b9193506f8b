"""The run-folder format: config.json, run.json, loss.csv, manifest.json and checkpoints, each
written atomically and validated field by field when read back."""
