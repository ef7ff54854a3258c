"""One blueprint per resource: chat, models, health."""
