from django.urls import path

from reporting.demo import views

urlpatterns = [
    path("portfolio/daily", views.daily_portfolio, name="demo-daily-portfolio"),
    path("portfolio/performance", views.monthly_performance, name="demo-monthly-performance"),
    path("clients/positions", views.clients_positions, name="demo-clients-positions"),
    # `path:` lets any id through to the view, which answers an unknown one with a JSON error.
    path("clients/<path:client_id>/statement", views.client_statement, name="demo-client-statement"),
]
