"""The load-test bot: load, stress, spike, soak, failover and concurrency tests against twinfer (any protocol) or
any KServe v2 server. Virtual users run on Twisted, scenario steps are commands in a registry, several worker
processes report HDR histograms that the coordinator merges exactly."""
