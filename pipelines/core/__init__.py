"""Foundations every feature uses: errors, atomic file writes, devices and precision, the job queue, downloads."""
