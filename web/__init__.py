"""HTTP entry points: aiohttp routes (thin), middleware, SSE."""
