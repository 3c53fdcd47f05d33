"""The HTTP boundary: mitmproxy's hooks and what answers a request on an intercepted host: the addon, routing,
the handler that turns outcomes into replies, ranges, the blob server large files stream from, and the small
guard addons (fail closed, loopback, descriptors)."""
