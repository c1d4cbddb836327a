"""hetexport: HET output layers in PyTorch, training under label noise, ONNX export into a
Triton model repository.

Typical usage::

    from hetexport.layers import HetSoftmaxHead
    from hetexport.model import ModelSpec, build_model
    from hetexport.checkpoint import save_checkpoint, load_checkpoint
    from hetexport.onnx.export import export_to_repository
"""
