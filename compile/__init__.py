"""compile/: ONNX -> (legalize) -> Relax -> (lower) -> TVM build -> verified artifact, cached.

Importing this package does not import TVM; each function imports it when it needs it.
"""
from .artifact import ArtifactWarning, compile_model
# `build` (the function) stays in compile.build: exporting it here would shadow the module.
from .build import BuildResult, export_library
from .cache import ARTIFACT_FORMAT, cache_key, default_cache_dir, open_cache_dir
from .importer import import_onnx
from .legalize import legalize_conv_transpose
from .loader import Artifact, artifact_problem, load_artifact
from .targets import Capabilities, TargetEntry, get_target, load_targets

__all__ = [
    "ARTIFACT_FORMAT", "Artifact", "ArtifactWarning", "BuildResult", "Capabilities",
    "TargetEntry", "artifact_problem", "cache_key", "compile_model",
    "default_cache_dir", "export_library", "get_target", "import_onnx", "load_artifact",
    "legalize_conv_transpose", "load_targets", "open_cache_dir",
]
