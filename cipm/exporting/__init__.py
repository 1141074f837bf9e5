"""Exporting models: ONNX, safetensors, Hugging Face folders and any plugin's format, each
with the policy (permutation or kept units) that made the model. Exporters are plugins
(`cipm_exporters`); the built-in ones are in ``plugins/``."""

from cipm.exporting.exporter import Exporter, ExportJob, exporters
from cipm.exporting.policy import Policy
from cipm.exporting.uniform import uniform_sizes
from cipm.exporting.write import export, read_policy

__all__ = ["ExportJob", "Exporter", "Policy", "export", "exporters", "read_policy", "uniform_sizes"]
