"""Data-parallel training evidence: 1-process vs N-process loss curves of every trainer node."""
