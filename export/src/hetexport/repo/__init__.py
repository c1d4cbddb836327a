"""The Triton model repository: the one owner of config.pbtxt and of the directories.

* ``config``: ``ModelConfig`` and its parts as frozen dataclasses, with the builders of each
  kind of model (ONNX Runtime, Python backend, ensemble) and ``gpu_variant``;
* ``pbtxt``: ``render_config`` and ``parse_config``, the one writer and the one parser;
* ``layout``: ``ModelFiles`` (a model in memory, as builders return it) and ``write_model``,
  which writes a version atomically beside or instead of the existing ones;
* ``gpu``: ``write_gpu_repository``, a repository's copy with its ONNX models on the GPU.

Typical usage::

    from hetexport.repo.layout import write_model
    written = write_model(Path("model_repo"), files, version=2)
"""
