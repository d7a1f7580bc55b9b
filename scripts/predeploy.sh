#!/bin/sh
# Run before every deploy of either service (Railway's preDeployCommand): create the
# indexes and the default plans. Both commands are idempotent, so running them on
# every deploy, and from both services, is safe. A non-zero exit stops the deploy.
set -eu
flask --app wsgi init-db
flask --app wsgi seed-plans
