"""Webhooks: events written to a durable outbox with the status change that caused them, and a
sender that delivers them at least once, signed per the Standard Webhooks specification."""
