"""Team-wide settings."""
