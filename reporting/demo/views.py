from django.http import JsonResponse


def daily_portfolio(request):
    return JsonResponse({})


def monthly_performance(request):
    return JsonResponse({})
