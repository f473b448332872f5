"""The process: command-line flags, auth, the engine objects both front ends share, the HTTP server."""
