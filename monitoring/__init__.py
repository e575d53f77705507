"""Evidently monitoring: drift reports, A/B snapshots, the workspace and its dashboards (imports ``iat``, never the reverse)."""
