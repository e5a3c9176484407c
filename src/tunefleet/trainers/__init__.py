"""Data, models, adaptation methods and the one training path (HF Trainer) every method shares.

Never imports Optuna: pruning reaches a trial through the ``report`` callable it is handed.
"""
