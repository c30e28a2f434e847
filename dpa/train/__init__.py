"""Training: input schema, statistics, energy bias, loss, schedules and the loop (backend-neutral;
each backend supplies only its train step)."""
