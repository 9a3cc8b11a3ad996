"""The game-protocol server: TCP listener, connections, sessions and the commands they dispatch to."""
