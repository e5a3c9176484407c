"""Telemetry: a Trainer callback turns training into metric points; a background bus delivers
them to the sinks (MLflow, W&B) so that training never waits on a tracker.

Knows nothing of Optuna beyond the sweep name and trial number it is handed.
"""
