"""What a run is built from: its model, schedule and loss (from the config or a user's module),
its data, and a trained run loaded back into memory."""
