"""AUTOMATIC1111's /sdapi/v1 REST API on the shared services."""
