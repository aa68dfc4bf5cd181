"""The dock panel's controllers: one job each (training, the preview, reconstruction and its block pump,
comparing, quality, export, estimates, the input, the model), each owning its workers and runtime state."""
