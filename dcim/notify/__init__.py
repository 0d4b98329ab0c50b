"""Notifications: alarm events planned into messages (rota, routes, escalation, floods) and
delivered through a durable outbox (webhook, email, log). The config models are in
`dcim.config.notifications`."""
