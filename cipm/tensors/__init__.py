"""A model's tensors along its groups: reading units out of them, permuting, mapping and
resizing them, and returning new models that hold the results."""

from cipm.tensors.fitted import fitted_tensors
from cipm.tensors.modify import permute, permute_state
from cipm.tensors.resize import with_tensors
from cipm.tensors.units import map_units, unit_matrix

__all__ = ["fitted_tensors", "map_units", "permute", "permute_state", "unit_matrix", "with_tensors"]
