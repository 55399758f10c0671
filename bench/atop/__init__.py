"""ATOP benchmark: articulation fit accuracy on the procedural objects (``fewstep bench atop``)."""
