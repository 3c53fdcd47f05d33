"""The HTTP boundary: what answers a request on an intercepted host: the request addon, routing, the handler
that turns outcomes into replies, ranges, the blob server large files stream from, and the small guard addons
(fail closed, loopback, descriptors). The addons that configure and keep the proxy are in operations/."""
