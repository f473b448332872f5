"""Test helpers: tiny model folders and the app as a real process."""
