// pm2 start deploy/pm2/ecosystem.config.js   (from the repository root, after `make models`)
// pm2 keeps the processes up; twinfer's own supervisor (--workers) shares the ports between workers, so pm2
// runs one supervisor per machine, not one process per worker.
module.exports = {
  apps: [
    {
      name: "twinfer-config-server",
      script: ".venv/bin/twinfer",
      args: "config-server --port 20100 --store ./config-store",
      interpreter: "none",
      env: { TWINFER_CONFIG_WRITE_TOKEN: "change-me" },
      autorestart: true,
    },
    {
      name: "twinfer",
      script: ".venv/bin/twinfer",
      args: "serve --model-repository models --workers 2 --config-server http://127.0.0.1:20100 --service-group dev",
      interpreter: "none",
      env: {
        ORT_DISABLE_TELEMETRY: "1",
        TWINFER_LOG_FORMAT: "json",
        TWINFER_AUTH__TOKEN_SECRET: "change-me",
      },
      kill_signal: "SIGTERM",     // twinfer drains on SIGTERM
      kill_timeout: 15000,        // longer than drain_timeout_s
      autorestart: true,
      max_restarts: 20,
    },
  ],
};
