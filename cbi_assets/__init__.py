"""CBI: the forecasting asset graph for ZL (CBOT soybean oil) and MES (Micro E-mini S&P 500)."""
