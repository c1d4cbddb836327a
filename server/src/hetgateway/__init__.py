"""hetserve's HTTP gateway: FastAPI in front of NVIDIA Triton, never importing torch.

Typical usage::

    from hetgateway import create_app, load_settings
    app = create_app(load_settings(triton_grpc_url="127.0.0.1:8001"))

or from the shell: ``hetgateway serve --model-repository model_repo`` (embedded Triton and
the gateway) and ``hetgateway gateway`` (the gateway alone, in front of an external Triton).
"""

__version__ = "0.1.0"

from hetgateway.app import create_app  # noqa: E402
from hetgateway.settings import GatewaySettings, load_settings  # noqa: E402

__all__ = ["GatewaySettings", "__version__", "create_app", "load_settings"]
