"""Frame sinks and integrations (recorder, virtual camera, OBS)."""
