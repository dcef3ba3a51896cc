"""Signals: anything that scores an answer (the rules, P(True), a PM, a PRM, a GRM judgement), found by name."""
