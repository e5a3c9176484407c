"""tunefleet: hyperparameter sweeps for fine-tuning transformers, tracked end to end."""

__version__ = "0.1.0"
