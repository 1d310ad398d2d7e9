from django.urls import path

from reporting.demo import views

urlpatterns = [
    path("portfolio/daily", views.daily_portfolio, name="demo-daily-portfolio"),
    path("portfolio/performance", views.monthly_performance, name="demo-monthly-performance"),
]
