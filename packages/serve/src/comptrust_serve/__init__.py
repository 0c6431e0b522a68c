"""comptrust-serve: run checkpoints behind inference servers and describe them as endpoints.

``launch(model_dir)`` starts a server (the ``embedded`` launcher: comptrust's transformers server in a child process;
``process``: TGI's or vLLM's own server from PATH; ``docker``: their containers) and returns a :class:`ServerHandle`
whose ``.endpoint`` goes into ``endpoints.json``. ``launch_fleet(checkpoints, launcher, options)`` places several
checkpoints on GPUs and starts them concurrently. Importing this package loads
neither torch nor transformers.
"""

from comptrust_serve.checkpoint import Checkpoint, check_checkpoint_files, open_checkpoint
from comptrust_serve.fleet import Fleet, FleetFailure, launch_fleet
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
    pick_auto,
    register_launcher,
    resolve_launcher,
)
from comptrust_serve.launchers.base import StartCancelled, Startup
from comptrust_serve.placement import detect_gpus, parse_gpus, place
from comptrust_serve.ports import free_port, url_for

__version__ = "0.1.0"

__all__ = [
    "AUTO_ORDER",
    "Checkpoint",
    "Fleet",
    "FleetFailure",
    "LaunchOptions",
    "Launcher",
    "ServerHandle",
    "ServerStartError",
    "StartCancelled",
    "Startup",
    "__version__",
    "check_checkpoint_files",
    "detect_gpus",
    "free_port",
    "get_launcher",
    "launch",
    "launch_checkpoint",
    "launch_fleet",
    "launcher_names",
    "open_checkpoint",
    "parse_gpus",
    "pick_auto",
    "place",
    "probe",
    "register_launcher",
    "resolve_launcher",
    "url_for",
]
