"""The training loop of a run folder and where it reports (loss.csv, TensorBoard, progress)."""
