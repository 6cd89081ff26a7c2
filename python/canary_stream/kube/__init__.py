"""Kubernetes plumbing of the controller: client configuration, list + watch, status writes,
events, leader election and retries (kubernetes-asyncio)."""
