"""Loading user extensions from extensions/ and wiring their hooks into the app."""
