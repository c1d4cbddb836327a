"""Triton Python-backend model: the fused MC head (hetexport.fused)."""

from hetexport.fused.python_backend import McHeadModel as TritonPythonModel  # noqa: F401
