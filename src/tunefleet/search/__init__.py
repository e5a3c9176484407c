"""The search: the config's search space as Optuna suggest calls, samplers, pruners, studies.

Never imports torch: a trial reaches this package only as a config and a value.
"""
