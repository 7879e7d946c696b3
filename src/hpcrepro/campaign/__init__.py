"""Campaigns: a folder, a manifest of stages and jobs, the rules to submit, repair, resume."""
