"""The browser playground: plain HTML, CSS and JS shipped in the package (no build step, no
CDN), served by the server itself at `/` and `/playground`."""
