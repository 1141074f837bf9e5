"""Model files: exporting models to ONNX, safetensors, Hugging Face folders and any plugin's
format, each with the policy (permutation or kept units) that made the model, and reading
models back from the formats plugins know. Exporters (`cipm_exporters`) and model sources
(`cipm_model_sources`) are plugins; the built-in ones are in `cipm.plugins`."""

from cipm.exporting.exporter import exporters
from cipm.exporting.formats import Exporter, ExportJob, ModelSource
from cipm.exporting.policy import Policy
from cipm.exporting.sources import model_sources
from cipm.exporting.write import export, read_policy

__all__ = [
    "ExportJob",
    "Exporter",
    "ModelSource",
    "Policy",
    "export",
    "exporters",
    "model_sources",
    "read_policy",
]
