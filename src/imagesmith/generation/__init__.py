"""The core: generation requests, the job lifecycle, enhancement and aspect ratios."""
