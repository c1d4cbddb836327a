"""hetexport's errors: one base class, one subclass per thing that can go wrong."""


class HetExportError(Exception):
    """Base of every error hetexport raises on purpose."""


class CheckpointError(HetExportError):
    """A checkpoint is missing, corrupt, truncated, of another format or does not fit its model."""


class ExportError(HetExportError):
    """ONNX export or its validation against PyTorch failed; nothing was written."""


class RepositoryError(ExportError):
    """A model repository cannot be written (name, version, disk); nothing was changed."""


class InputError(HetExportError, ValueError):
    """Images handed to a model have the wrong shape or type, or are not finite."""


class SpecError(HetExportError, ValueError):
    """A ModelSpec is inconsistent (unknown head or backbone, labels vs classes, ...)."""
