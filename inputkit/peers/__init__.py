"""Peers inputkit is measured against (torch's DataLoader), and the comparison itself."""
