"""The game protocol: framing, generated protobuf messages, tensor codec and error codes.

Shared by the server, the clients and the bot, so both ends of a connection use the same code.
"""
