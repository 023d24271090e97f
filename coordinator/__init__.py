"""fleetzip coordinator: discovers agents and streams one merged ZIP of their files."""
