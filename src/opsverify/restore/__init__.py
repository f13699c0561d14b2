"""Restore drills: scratch targets with verified cleanup, restore strategies, fidelity, recovery probes."""
