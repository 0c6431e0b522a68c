"""comptrust-serve: run checkpoints behind inference servers and describe them as endpoints.

``launch(model_dir)`` starts a server (the ``embedded`` launcher: comptrust's transformers server in a child process)
and returns a :class:`ServerHandle` whose ``.endpoint`` goes into ``endpoints.json``. Importing this package loads
neither torch nor transformers.
"""

from comptrust_serve.checkpoint import Checkpoint, check_checkpoint_files, open_checkpoint
from comptrust_serve.health import probe
from comptrust_serve.launch import launch, launch_checkpoint
from comptrust_serve.launchers import (
    AUTO_ORDER,
    Launcher,
    LaunchOptions,
    ServerHandle,
    ServerStartError,
    get_launcher,
    launcher_names,
    register_launcher,
    resolve_launcher,
)
from comptrust_serve.ports import free_port, url_for

__version__ = "0.1.0"

__all__ = [
    "AUTO_ORDER",
    "Checkpoint",
    "LaunchOptions",
    "Launcher",
    "ServerHandle",
    "ServerStartError",
    "__version__",
    "check_checkpoint_files",
    "free_port",
    "get_launcher",
    "launch",
    "launch_checkpoint",
    "launcher_names",
    "open_checkpoint",
    "probe",
    "register_launcher",
    "resolve_launcher",
    "url_for",
]
