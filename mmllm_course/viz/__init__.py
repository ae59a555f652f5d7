"""Figures and widgets for the notebooks (matplotlib, core ipywidgets). No model code lives here."""

from mmllm_course.viz.flow import PARTS, FlowStage, check_flow, draw_flow, format_shape

__all__ = ["PARTS", "FlowStage", "check_flow", "draw_flow", "format_shape"]
