"""Running the service: logs, metrics, start-up checks, gunicorn settings."""
