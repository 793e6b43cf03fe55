"""http_api"""
