"""The REST API (django-ninja), an entry point: each endpoint checks its token's scope and its user's permission,
then makes one call into reporting.services (which writes, enqueues and audits), or reads.

    app.py         the NinjaAPI: its routers, authentication and error handlers
    access.py      the bearer token and what each endpoint needs (a scope and the admin's permission)
    errors.py      the one error shape, and every error turned into it
    schemas.py     what goes in and comes out
    reports.py, runs.py, recipients.py   the endpoints
    urls.py        mounted by reporting.urls (and the project) under api/v1/
"""
