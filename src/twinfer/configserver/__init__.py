"""The config server (service-group settings over HTTP) and the client side that pulls, caches and watches them."""
