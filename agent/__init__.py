"""fleetzip agent: serves a node's files below configured roots, plus health routes."""
