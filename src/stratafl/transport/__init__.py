"""gRPC plumbing shared by the tiers: channels, servers, chunked model streams.

Knows about bytes and messages, never about aggregation maths.
"""
