"""Images: validation of incoming bytes, safe fetching of remote images, uploads."""
