"""The plugin host: hook specifications, registration records and the registry."""
