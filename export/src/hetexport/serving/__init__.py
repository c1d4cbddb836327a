"""The served head in PyTorch: the module that becomes the ONNX graph and that the exact
reference measures (``head``: ``ServingGraph``, images -> ``hetcontract.HEAD_OUTPUTS``).

It sits below both ``hetexport.onnx`` (which traces it) and ``hetexport.exact`` (which
measures it), so neither imports the other to reach it.

Typical usage::

    from hetexport.serving.head import ServingGraph
    graph = ServingGraph(model.eval(), noise=bank, top_k=5, num_confusable=3)
"""
