"""One security policy for every transport: tokens, bearer headers, the admin check, TLS and receiver networks.

Front-ends (game protocol, HTTP, gRPC, streams) all import from here, so a token that logs in on TCP is the same
token HTTP and gRPC accept, and a rule tightened here is tightened everywhere.
"""
