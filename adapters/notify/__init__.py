"""Notification channels: signed webhooks over HTTP, e-mail over SMTP; secrets at rest."""
