"""``hetclient audit``: find the wrong labels of a labelled image set with a served model.

One module per stage: ``labelled_images`` (manifest or folder in, class ids out), ``options``
(where and how to send), ``answers`` (the resumable answers file), ``progress`` (the bar),
``runner`` (the gateway calls, then scoring and files). The scoring and the files themselves
(``hetcontract.audit``, ``hetcontract.audit_scoring``, ``hetcontract.audit_report``) are shared
with ``hetexport audit``, which must not depend on the SDK: they live in the contract, behind
its ``audit`` extra.

This package's top level needs no numpy (the CLI builds its parser without the ``audit``
extra); ``hetclient.audit.runner`` does::

    from hetclient.audit import AuditOptions, read_labelled_images
    from hetclient.audit.runner import audit
"""

from hetclient.audit.answers import Answer, AnswersHeader, answers_path
from hetclient.audit.labelled_images import LabelledImage, read_labelled_images, resolve_labels
from hetclient.audit.options import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, AuditOptions
from hetclient.audit.progress import ProgressBar, progress_stream

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "Answer",
    "AnswersHeader",
    "AuditOptions",
    "LabelledImage",
    "ProgressBar",
    "answers_path",
    "progress_stream",
    "read_labelled_images",
    "resolve_labels",
]
