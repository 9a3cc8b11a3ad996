"""KServe v2 over HTTP/1.1: a Twisted Protocol parsing with httptools (keep-alive, pipelining), and the routes."""
