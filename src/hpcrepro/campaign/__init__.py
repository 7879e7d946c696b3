"""Campaigns: a folder, a manifest of stages and jobs, and the rules to submit, repair and resume."""
