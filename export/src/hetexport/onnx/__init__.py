"""Everything between a trained ``HetClassifier`` and an ONNX file in a Triton repository
(the module it traces, ``ServingGraph``, is ``hetexport.serving.head``).

* ``graph``: tracing to one batched graph whose answers do not depend on the batch;
* ``runner``: ``OnnxRunner``, ONNX Runtime over an exported file;
* ``parity``: the exported graph against PyTorch;
* ``export``: all of the above into ``model_repo/<name>/``.

Typical usage::

    from hetexport.onnx.export import export_to_repository
    report = export_to_repository("runs/het.pt", "model_repo", "fashion_het")
"""
