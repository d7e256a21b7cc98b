"""Memory planning: what every stage may hold at its worst, before anything starts.

The plan's lines (terms), the geometry the workers share with it, the fixes
suggested when a plan does not fit, and the measured memory it is checked against.
"""
