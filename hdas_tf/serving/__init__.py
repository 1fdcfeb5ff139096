"""Serving: export of trained evaluation networks as TF Serving SavedModels."""
