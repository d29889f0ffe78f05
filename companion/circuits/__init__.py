"""Circuit limits of constant-depth transformers (chapter 04).

* :mod:`companion.circuits.circuit`: :class:`Circuit`, a DAG of unbounded fan-in gates
  (AND, OR, NOT, MAJORITY, THRESHOLD(k), constants) evaluated on a batch of inputs at once.
* :mod:`companion.circuits.constructions`: majority, parity (AC0 and TC0 bases), adder,
  comparison; average sensitivity; a size plot.
* :mod:`companion.circuits.formulas`: Boolean formulas ``F := 0 | 1 | !F | (F&F) | (F|F)``:
  generation, evaluation, log-round tree contraction, chain-of-thought traces.
* :mod:`companion.circuits.model`: a tiny transformer that answers directly or steps
  through the chain of thought; :mod:`companion.circuits.train` makes its checkpoints.
"""

from companion.circuits.circuit import GATE_KINDS, Circuit, Gate
from companion.circuits.constructions import (
    adder_circuit,
    all_inputs,
    average_sensitivity,
    bits_to_int,
    circuit_measures,
    comparison_circuit,
    int_to_bits,
    majority_circuit,
    majority_sensitivity,
    parity_circuit,
    plot_circuit_sizes,
)
from companion.circuits.formulas import (
    FormulaTree,
    compose,
    contraction_schedule,
    cot_trace,
    evaluate_formula,
    evaluate_formula_parallel,
    formula_depth,
    max_rounds_bound,
    parse_formula,
    plot_formula,
    random_formula,
    rake_label,
    rake_schedule,
    reduce_step,
    sized_formula,
)

__all__ = [
    "GATE_KINDS", "Circuit", "Gate",
    "adder_circuit", "all_inputs", "average_sensitivity", "bits_to_int", "circuit_measures",
    "comparison_circuit", "int_to_bits", "majority_circuit", "majority_sensitivity", "parity_circuit",
    "plot_circuit_sizes",
    "FormulaTree", "compose", "contraction_schedule", "cot_trace", "evaluate_formula",
    "evaluate_formula_parallel", "formula_depth", "max_rounds_bound", "parse_formula", "plot_formula",
    "random_formula", "rake_label", "rake_schedule", "reduce_step", "sized_formula",
]
