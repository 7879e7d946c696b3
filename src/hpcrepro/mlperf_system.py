"""The MLPerf Training system description (`systems/<name>.json`): its fields and status words.

Shared by `detect --mlperf-json` and `collect --package`, so both write what mlperf-logging's
system_desc_checker requires (the same 33 fields for rulesets 2.1.0 to 4.0.0).
"""

from __future__ import annotations

SYSTEM_FIELDS = (
    "submitter", "division", "status", "system_name", "number_of_nodes",
    "host_processors_per_node", "host_processor_model_name", "host_processor_core_count",
    "host_processor_vcpu_count", "host_processor_frequency", "host_processor_caches",
    "host_processor_interconnect", "host_memory_capacity", "host_storage_type",
    "host_storage_capacity", "host_networking", "host_networking_topology",
    "host_memory_configuration", "accelerators_per_node", "accelerator_model_name",
    "accelerator_host_interconnect", "accelerator_frequency", "accelerator_on-chip_memories",
    "accelerator_memory_configuration", "accelerator_memory_capacity", "accelerator_interconnect",
    "accelerator_interconnect_topology", "cooling", "hw_notes", "framework",
    "other_software_stack", "operating_system", "sw_notes",
)  # fmt: skip

# The checker for 4.0.0 already insists on the long availability strings; they pass every ruleset.
STATUS_BY_SHORT_NAME = {
    "onprem": "Available on-premise",
    "cloud": "Available cloud",
    "research": "Research, Development, or Internal (RDI)",
    "preview": "Preview",
}
STATUS_VALUES = tuple(STATUS_BY_SHORT_NAME.values())
