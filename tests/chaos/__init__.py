"""Fault injection ("make chaos"): the real stack through a seeded schedule of faults, then invariants."""
