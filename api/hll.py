"""The read side's HyperLogLog counting: it lives in `contract.hll`, shared with the projector's audit."""

from contract.hll import REGISTERS, cardinality, count, merge, registers

__all__ = ["REGISTERS", "cardinality", "count", "merge", "registers"]
