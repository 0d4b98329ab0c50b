"""Who may do what: local users and API tokens (SQLite), password hashing, sessions, roles
and their permissions, and the rate limits of sign-in and operator actions.

The web edge (dcim/dashboards) asks `Authenticator` who a request is and checks the
permission matrix of `roles`; the `dcim users` CLI edits the store. See docs/security.md.
"""
