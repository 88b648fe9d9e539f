"""Policies that map a state to torques without planning (base policy π0, learned policies)."""
