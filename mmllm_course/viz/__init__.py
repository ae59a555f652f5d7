"""Figures and widgets for the notebooks (matplotlib, core ipywidgets). No model code lives here."""
